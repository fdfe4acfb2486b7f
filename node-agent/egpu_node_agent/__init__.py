"""The egpu-operator node agent: reads every GPU through NVML and sysfs, publishes node labels.

Layers, outermost first: ``agent`` (the poll loop) uses ``publisher`` (the only module that
talks to the API server) and a ``GpuBackend`` (``nvml`` over pynvml or over ``fake_nvml``,
plus ``sysfs``); ``labels`` turns readings into labels and is pure.
"""
