"""The egpu-operator: reconciles InferenceDeployments onto GPU nodes the node agent describes.

``placement``, ``facts``, ``pods``, ``power`` and ``status`` are pure; ``kube`` is the only
module that talks to the API server; ``handlers`` wires them into kopf.
"""
