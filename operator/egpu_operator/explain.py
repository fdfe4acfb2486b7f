"""Why a model fits a node or not, for tooling: the one public door to the operator's placement reasoning.

The ``kubectl egpu`` plugin and ``make demo`` print, for one InferenceDeployment, each node's verdict
as the operator's placement would give it. They call ``explain`` and render what it returns; they
import nothing else of the operator, so placement, facts and liveness may change shape behind it.

Public surface:

- ``explain(deployment, nodes, agent_leases, pods, now)`` -> ``Explanation``: what one replica needs
  (``Requirement``) and one ``NodeVerdict`` per node, sorted by node name. Inputs are the objects as
  the API server returns them (plain dicts); pure, nothing is read or written.
- ``ExplainError``: the InferenceDeployment's spec cannot be read; the sentence names the field.

One snapshot cannot prove an agent dead (the operator watches Leases over time for that), so a node
whose agent Lease is not fresh is judged "not yet confirmed alive", never "dead".
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec
from egpu_operator.facts import lease_time, node_facts
from egpu_operator.liveness import Liveness, LivenessConfig
from egpu_operator.placement import Demand, NodeFacts, rejection

__all__ = ["ExplainError", "Explanation", "NodeVerdict", "Requirement", "explain"]


class ExplainError(ValueError):
    """The InferenceDeployment cannot be explained; the message names the field and the fix."""


@dataclass(frozen=True)
class Requirement:
    """What one replica needs of a node."""

    vram_mib: int
    min_bandwidth_mbps: int
    allowed_modes: tuple[str, ...]

    def sentence(self) -> str:
        """'needs 18432 MiB and >= 600 MB/s; modes none, passthrough'."""
        modes = ", ".join(self.allowed_modes)
        return f"needs {self.vram_mib} MiB and >= {self.min_bandwidth_mbps} MB/s; modes {modes}"


@dataclass(frozen=True)
class NodeVerdict:
    """One node's verdict for one InferenceDeployment."""

    node: str
    vram_mib: int
    bandwidth_mbps: int
    #: Why placement refuses the node (ignoring free GPUs); None: the node is adequate.
    rejection: str | None
    #: The estimated load, e.g. "18.2 s, link 1000 MB/s"; "load unknown" when no stage is known.
    load: str
    #: The replica the deployment's status places here; None: none.
    chosen_replica: int | None
    #: Every GPU the node advertises is held by a bound pod.
    full: bool

    @property
    def adequate(self) -> bool:
        return self.rejection is None

    def sentence(self) -> str:
        """The verdict in words: chosen, adequate (and why unused), or the rejection."""
        if self.chosen_replica is not None:
            return f"chosen (replica {self.chosen_replica}), {self.load}"
        if self.rejection is not None:
            return self.rejection
        if self.full:
            return f"adequate ({self.load}), but every GPU is taken"
        return f"adequate ({self.load}), not needed: faster or spread choices won"


@dataclass(frozen=True)
class Explanation:
    requirement: Requirement
    nodes: tuple[NodeVerdict, ...]


def explain(
    deployment: Mapping[str, Any],
    nodes: Iterable[Mapping[str, Any]],
    agent_leases: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    now: datetime,
) -> Explanation:
    """Each node's verdict for ``deployment``: ``agent_leases`` are the node agents' Leases (their
    namespace), ``pods`` every pod (to count the GPUs held), ``now`` an aware time to judge Leases by."""
    demand = _demand(deployment)
    renewed = {_lease_node(lease): lease_time(lease) for lease in agent_leases}
    chosen = {p["node"]: p["replica"] for p in (deployment.get("status") or {}).get("placements") or []}
    held = gpus_held(pods)
    ttl_s = LivenessConfig().lease_ttl_s
    verdicts = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        last = renewed.get(node["metadata"]["name"])
        fresh = last is not None and (now - last).total_seconds() <= ttl_s
        facts = node_facts(node, Liveness.ALIVE if fresh else Liveness.UNKNOWN)
        verdicts.append(_verdict(facts, demand, chosen.get(facts.name), held.get(facts.name, 0)))
    requirement = Requirement(demand.vram_mib, demand.min_bandwidth_mbps, tuple(sorted(demand.allowed_modes)))
    return Explanation(requirement, tuple(verdicts))


def gpus_held(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Node name -> GPUs its bound, unfinished pods hold (limits, as the device plugin counts them)."""
    held: dict[str, int] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"].get("containers") or []:
            held[node_name] = held.get(node_name, 0) + int(
                ((container.get("resources") or {}).get("limits") or {}).get(keys.GPU_RESOURCE, 0)
            )
    return held


def _verdict(facts: NodeFacts, demand: Demand, replica: int | None, held: int) -> NodeVerdict:
    load = demand.estimate(facts)
    cost = f"{load.seconds:.1f} s, {load.bottleneck}" if load.bottleneck is not None else "load unknown"
    return NodeVerdict(
        node=facts.name,
        vram_mib=facts.vram_mib,
        bandwidth_mbps=facts.bandwidth_mbps,
        rejection=rejection(facts, demand),
        load=cost,
        chosen_replica=replica,
        full=held >= facts.gpu_allocatable,
    )


def _demand(deployment: Mapping[str, Any]) -> Demand:
    """What one replica needs; ``ExplainError`` naming the field when the spec cannot be read."""
    metadata = deployment.get("metadata") or {}
    name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}".lstrip("/")
    try:
        spec = InferenceDeploymentSpec.model_validate(deployment.get("spec") or {})
        return Demand.of_spec(spec, str(metadata.get("name", "")))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in ("spec", *first["loc"]))
        raise ExplainError(f"{name}: {field}: {first['msg']}; fix it in the InferenceDeployment") from None
    except ValueError as error:
        raise ExplainError(f"{name}: {error}; fix it in the InferenceDeployment") from None


def _lease_node(lease: Mapping[str, Any]) -> str:
    return str(lease["metadata"]["name"]).removeprefix(keys.AGENT_LEASE_PREFIX)
