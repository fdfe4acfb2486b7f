"""The contract shared by the egpu-operator operator, node agent and tooling.

Everything two components must agree on lives here and nowhere else: the API group, the
label and annotation prefix, the fleet-profile format that describes (simulated) GPU nodes,
and the PCIe arithmetic both sides use. This package imports nothing from kopf, the
Kubernetes client or pynvml, so it can be loaded anywhere, including in a user's tooling.
"""

from egpu_api.keys import API_GROUP, API_VERSION, PREFIX

__all__ = ["API_GROUP", "API_VERSION", "PREFIX"]
