"""Whole-pod fit: what kube-scheduler checks of a pod against a node, for the replica pod
placement is about to create. Pure: plain dicts in, sentences out.

Placement that counts GPUs only would pick a node the scheduler then refuses (memory, CPU, a
full pod count, an extended resource, the template's own node affinity), and the replica would
be created, refused and re-created forever. So the same filters run here first, with the
scheduler's arithmetic:

- **NodeResourcesFit**: the pod's effective requests (containers summed, init containers as a
  maximum, restartable sidecars added, pod overhead on top; a limit without a request is the
  request, as API defaulting makes it) against the node's allocatable less the requests of every
  pod bound there. CPU counts in millicores, everything else in whole units; a resource the pod
  does not request is not checked, one the node does not offer has nothing free.
- **NodeAffinity**: the template's nodeSelector and required node affinity terms.
- **PodTopologySpread** (``DoNotSchedule`` constraints only) counted over the deployment's own
  replicas; pods of other owners that the selector also matches are not seen here, and the
  scheduler's refusal path (``refusals``) covers what placement cannot see.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from egpu_api.quantity import format_bytes, parse_units

Resources = Mapping[str, int]
#: The resources every pod asks for one of, as kube-scheduler counts them.
PODS = "pods"
CPU = "cpu"
_BYTES = ("memory", "ephemeral-storage")


def units(name: str, value: Any) -> int:
    """One quantity as the scheduler counts ``name``: millicores for CPU, whole units otherwise."""
    return parse_units(value, milli=name == CPU)


def container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    """A container's requests; a resource with only a limit requests its limit (API defaulting)."""
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    return {name: units(name, value) for name, value in {**limits, **requests}.items()}


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, int]:
    """The pod's effective requests (Kubernetes' resourcehelper.PodRequests), ``pods: 1`` included.

    ValueError names a quantity that does not parse (the API server would refuse the pod too)."""
    total = _sum(container_requests(c) for c in pod_spec.get("containers") or [])
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for container in pod_spec.get("initContainers") or []:
        asks = container_requests(container)
        if container.get("restartPolicy") == "Always":  # a sidecar runs beside the app containers
            total = _sum([total, asks])
            sidecars = _sum([sidecars, asks])
        else:
            init_peak = _max(init_peak, _sum([asks, sidecars]))
    total = _max(total, init_peak)
    pod_level = (pod_spec.get("resources") or {}).get("requests") or {}
    total |= {name: units(name, value) for name, value in pod_level.items() if name in (CPU, "memory")}
    overhead = {name: units(name, value) for name, value in (pod_spec.get("overhead") or {}).items()}
    return _sum([total, overhead, {PODS: 1}])


def shortfalls(requests: Resources, allocatable: Resources, used: Resources) -> list[str]:
    """What the node lacks for a pod asking ``requests``, one phrase per resource, the scheduler's
    order (pods first); empty when it fits. ``used``: the requests of the pods bound there."""
    missing = []
    for name in sorted(requests, key=lambda name: (name != PODS, name)):
        need = requests[name]
        if need <= 0:
            continue
        free = allocatable.get(name, 0) - used.get(name, 0)
        if need > free:
            if name == PODS:
                missing.append(f"pods: {used.get(name, 0)} of {allocatable.get(name, 0)} allowed already run")
            else:
                missing.append(f"{name}: needs {show(name, need)}, {show(name, max(0, free))} free")
    return missing


def show(name: str, amount: int) -> str:
    """An amount of ``name`` as a person writes it: 12Gi, 1.5 (CPUs), 2."""
    if name == CPU:
        return f"{amount / 1000:g}"
    if name in _BYTES or name.startswith("hugepages-"):
        return format_bytes(amount)
    return str(amount)


def take(used: Resources, requests: Resources) -> dict[str, int]:
    """``used`` with one more pod asking ``requests``."""
    return _sum([used, requests])


def node_affinity_refusal(pod_spec: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> str | None:
    """Why the template's nodeSelector or required node affinity excludes the node; None: it does not."""
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return "template nodeSelector mismatch"
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms") or []
    if terms and not any(_term_matches(term, name, labels) for term in terms):
        return "template node affinity mismatch"
    return None


def _term_matches(term: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> bool:
    """Terms are ORed, the expressions of one term ANDed; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    return all(_matches(e, labels) for e in expressions) and all(_matches(f, {"metadata.name": name}) for f in fields)


def _matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    values = [str(v) for v in expression.get("values") or []]
    value = labels.get(key)
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def spread_constraints(pod_spec: Mapping[str, Any], pod_labels: Mapping[str, str]) -> list[tuple[str, int]]:
    """(topologyKey, maxSkew) of the template's ``DoNotSchedule`` spread constraints whose selector
    matches the replica pods themselves (those are the pods placement counts)."""
    found = []
    for constraint in pod_spec.get("topologySpreadConstraints") or []:
        if constraint.get("whenUnsatisfiable", "DoNotSchedule") != "DoNotSchedule":
            continue
        if selects(constraint.get("labelSelector") or {}, pod_labels):
            found.append((str(constraint.get("topologyKey", "")), int(constraint.get("maxSkew", 1))))
    return found


def spread_refusal(
    constraints: Sequence[tuple[str, int]], labels: Mapping[str, str], domains: Mapping[str, Mapping[str, int]]
) -> str | None:
    """Why one more replica on a node with ``labels`` breaks a constraint; None: it does not.

    ``domains``: per topology key, the replicas in each of its values over the nodes the pod may
    use (a domain without replicas counts 0, so it must be listed)."""
    for key, max_skew in constraints:
        value = labels.get(key)
        if value is None:
            return f"no {key} label (topology spread)"
        counts = domains.get(key) or {value: 0}
        skew = counts.get(value, 0) + 1 - min(counts.values(), default=0)
        if skew > max_skew:
            return f"topology spread: {key}={value} would have skew {skew} > maxSkew {max_skew}"
    return None


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels; an empty selector selects nothing (as topology spread reads it)."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(_matches(expression, labels) for expression in expressions)


def _sum(parts: Iterable[Resources]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for name, amount in part.items():
            total[name] = total.get(name, 0) + amount
    return total


def _max(first: Resources, second: Resources) -> dict[str, int]:
    return {name: max(first.get(name, 0), second.get(name, 0)) for name in {*first, *second}}
