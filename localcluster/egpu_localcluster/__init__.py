"""A real local Kubernetes control plane with simulated GPU nodes, for tests and the demo.

kube-apiserver, kube-controller-manager, kube-scheduler and etcd run as local processes
(orchestrated by ``kwokctl --runtime binary``), KWOK simulates the nodes of a fleet profile
and the lifecycle of their pods. Binaries come from ``hack/build-tools.sh``: built from
pinned Go modules once, then cached. Nothing here needs Docker.
"""

from egpu_localcluster.cluster import ClusterError, LocalCluster
from egpu_localcluster.tools import Tools, ToolsError, ensure_tools

__all__ = ["ClusterError", "LocalCluster", "Tools", "ToolsError", "ensure_tools"]
