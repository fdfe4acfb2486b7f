"""What the operator, the node agent and the tooling each need once: structured logs, a Kubernetes
client, Events, conditions with stable transition times and RFC 3339 timestamps.

Modules are imported as modules (``from egpu_runtime import timestamps``). Only ``kube`` imports
the Kubernetes client, and only when it is imported itself: the operator's CLI sets ``KUBECONFIG``
before the client is first imported.
"""
