"""A Kubernetes API client: in-cluster credentials, or a kubeconfig file."""

from pathlib import Path
from typing import Any

from kubernetes import client, config


def configuration(kubeconfig: Path | None) -> Any:
    """The client configuration from ``kubeconfig``, or the pod's service account when None.
    Raises the loader's error when neither yields credentials."""
    settings = client.Configuration()
    loader: Any = config  # the loaders are untyped
    if kubeconfig is None:
        loader.load_incluster_config(client_configuration=settings)
    else:
        loader.load_kube_config(config_file=str(kubeconfig), client_configuration=settings)
    return settings


def api_client(kubeconfig: Path | None) -> Any:
    """A client of its own (its own connection pool) for ``configuration(kubeconfig)``."""
    return client.ApiClient(configuration(kubeconfig))
