"""Is a node's agent alive, dead, or can the operator simply not tell? Pure: times are passed in.

A stale Lease proves nothing by itself: after an API-server outage, an etcd restart, a watch
gap or a pause of the operator's own process, every Lease looks old until the agents renew
it, yet every replica is still serving. Deleting on that evidence turns a blind moment into
an outage. So the operator judges agents the way kube-controller-manager's node lifecycle
controller judges kubelets:

- **alive**: the operator saw the Lease's renewTime change within the lease TTL, or the
  renewTime itself is that fresh;
- **dead**: the operator has been seeing the API server clearly (``Visibility``) for longer
  than TTL + grace, and in all that time this Lease did not change;
- **unknown**: anything else. Replicas on an unknown node stay where they are; new ones go
  elsewhere.

An agent being restarted is not a dead one either: a DaemonSet rollout stops the old pod, and
the new one may pull its image for minutes over an edge link. When the agent's own pods show a
restart (``agentpods``), a node that would be dead stays unknown for ``rollout_grace_s`` more;
past that, or without such a sign, the Lease alone decides as above. The verdict names the
observation that held it back.

And when most of the fleet turns dead at once (``disruption_fraction``), that is a
control-plane or network problem, not most agents dying together: every dead verdict turns
into unknown and nothing is removed (the node lifecycle controller's full-disruption rule).

Observation times are monotonic seconds (``time.monotonic``): they keep counting through a
SIGSTOP, which is exactly what must reset the clear-sight window.
"""

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Liveness(StrEnum):
    ALIVE = "alive"
    UNKNOWN = "unknown"
    DEAD = "dead"


@dataclass(frozen=True)
class LivenessConfig:
    """Thresholds, with the defaults documented in README.md (Failure safety)."""

    #: How stale an agent Lease may be and still count as alive; agents renew every 10 s.
    lease_ttl_s: float = 40.0
    #: Extra clear sight, beyond the TTL, before a Lease that stopped changing means a dead agent.
    grace_s: float = 20.0
    #: How often the operator asks the API server whether it is ready (``/readyz``).
    probe_interval_s: float = 2.0
    #: No successful probe for this long (an outage, etcd down, this process paused): blind.
    blind_after_s: float = 6.0
    #: At least this fraction of the judged nodes dead at once is a full disruption: remove nothing.
    disruption_fraction: float = 0.55
    #: Beyond TTL + grace, how long a node whose agent pod is being replaced or still starting
    #: (pulling its image over an edge link) stays unknown rather than dead.
    rollout_grace_s: float = 600.0

    def __post_init__(self) -> None:
        if min(self.lease_ttl_s, self.grace_s, self.probe_interval_s, self.blind_after_s) <= 0:
            raise ValueError("liveness thresholds must be positive numbers of seconds")
        if not 0 < self.disruption_fraction <= 1:
            raise ValueError("the disruption fraction must be in (0, 1]")
        if self.rollout_grace_s < 0:
            raise ValueError("the rollout grace must be zero or a positive number of seconds")
        if self.blind_after_s < 2 * self.probe_interval_s:
            raise ValueError("blind-after must be at least twice the probe interval, or one slow probe reads as an outage")


class Visibility:
    """Whether the operator sees the API server now, and since when without a gap."""

    def __init__(self, config: LivenessConfig, now: float) -> None:
        self._config = config
        self._lock = threading.Lock()
        self.last_ok: float | None = None
        self.clear_since = now  # start-up is a gap: the operator saw nothing before it
        self.gaps = 0

    def probe_succeeded(self, now: float) -> None:
        with self._lock:
            if self.last_ok is None or now - self.last_ok > self._config.blind_after_s:
                self.clear_since = now
                self.gaps += 1
            self.last_ok = now

    def gap(self, now: float) -> None:
        """Something was missed (a watch broke and relisted): start the clear-sight window again."""
        with self._lock:
            self.clear_since = max(self.clear_since, now)
            self.gaps += 1

    def seeing(self, now: float) -> bool:
        last = self.last_ok
        return last is not None and now - last <= self._config.blind_after_s

    def clear_for(self, now: float) -> float:
        """Seconds of unbroken sight up to ``now``; 0 while blind."""
        return now - self.clear_since if self.seeing(now) else 0.0


@dataclass
class _Seen:
    renew: datetime | None
    first_seen: float
    changed_at: float | None = None  # when the operator saw renewTime move; None: not since it first looked


@dataclass(frozen=True)
class Verdicts:
    by_node: Mapping[str, Liveness]
    disruption: bool  # most judged nodes looked dead at once: all of them were called unknown instead
    dead_seen: int  # nodes that looked dead before the disruption rule
    #: Nodes that would be dead on their Lease alone, held unknown because their agent is
    #: restarting, with the observation that says so (``agentpods.restarts``).
    restarting: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, node: str) -> Liveness:
        return self.by_node.get(node, Liveness.UNKNOWN)


class Heartbeats:
    """Lease renewals as the operator observed them, and verdicts from them. Thread-safe."""

    def __init__(self, config: LivenessConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}

    def observe(self, node: str, renew: datetime | None, now: float) -> None:
        """A Lease (or the lack of one) as a watch event or listing shows it."""
        with self._lock:
            seen = self._seen.get(node)
            if seen is None:
                self._seen[node] = _Seen(renew, first_seen=now)
            elif renew != seen.renew:
                seen.renew = renew
                if renew is not None:
                    seen.changed_at = now

    def forget(self, node: str) -> None:
        with self._lock:
            self._seen.pop(node, None)

    def judge(
        self, nodes: Iterable[str], visibility: Visibility, now: float, wall: datetime,
        restarts: Mapping[str, str] | None = None,
    ) -> Verdicts:  # fmt: skip
        """Verdicts for ``nodes`` (those that run an agent); ``restarts``: the nodes whose agent
        pods show a restart, and why. See the module docstring."""
        ttl, horizon = self._config.lease_ttl_s, self._config.lease_ttl_s + self._config.grace_s
        seeing = visibility.seeing(now)
        restarts = restarts or {}
        verdicts: dict[str, Liveness] = {}
        restarting: dict[str, str] = {}
        with self._lock:
            for node in nodes:
                seen = self._seen.get(node)
                if seen is None:
                    self._seen[node] = seen = _Seen(None, first_seen=now)
                renewed = seen.changed_at is not None and now - seen.changed_at <= ttl
                fresh = seen.renew is not None and (wall - seen.renew).total_seconds() <= ttl
                if renewed or fresh:
                    verdicts[node] = Liveness.ALIVE
                    continue
                since = max(visibility.clear_since, seen.first_seen, seen.changed_at or -math.inf)
                if not (seeing and now - since > horizon):
                    verdicts[node] = Liveness.UNKNOWN
                elif node in restarts and now - since <= horizon + self._config.rollout_grace_s:
                    verdicts[node], restarting[node] = Liveness.UNKNOWN, restarts[node]
                else:
                    verdicts[node] = Liveness.DEAD
        dead = sum(1 for verdict in verdicts.values() if verdict is Liveness.DEAD)
        disruption = bool(verdicts) and dead / len(verdicts) >= self._config.disruption_fraction
        if disruption:
            verdicts = {node: Liveness.UNKNOWN if v is Liveness.DEAD else v for node, v in verdicts.items()}
        return Verdicts(verdicts, disruption, dead, restarting)
