"""Build a Kubernetes API client: in-cluster credentials, or a kubeconfig file."""

from pathlib import Path
from typing import Any

from kubernetes import client, config


def api_client(kubeconfig: Path | None) -> Any:
    configuration = client.Configuration()
    loader: Any = config  # the loaders are untyped
    if kubeconfig is None:
        loader.load_incluster_config(client_configuration=configuration)
    else:
        loader.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)
