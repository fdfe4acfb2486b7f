"""Two replicas, one leader: Lease-based leader election and the cluster claim.

Within a release, the replicas contend for one ``coordination.k8s.io/v1`` Lease in the release
namespace, with client-go's rules: the holder renews it every retry period; it writes nothing
once its last renewal is older than the renew deadline; the others take it over once it has not
changed for its duration *as they observed it*. Expiry is judged on the observer's own
monotonic clock from the moment it saw the Lease change, never by comparing ``renewTime`` with
the local wall clock, so clocks that disagree between nodes cannot make a live leader look
expired (``decide`` is pure and tested by a case table).

Across releases, a second operator (another release, so another Lease) must not act on the same
InferenceDeployments. The InferenceDeployment CRD, cluster-scoped and shared by every release,
carries the claim: the annotation ``keys.OPERATOR_LEASE_ANNOTATION`` names the Lease of the
release that acts (``namespace/name``). A release leader acts only when the claim is its own, or
free: absent, or naming a Lease that is gone, released, or unchanged for its duration. Otherwise
it refuses to act and says which release holds the cluster. The claim is written only when it
changes hands, never on every renewal. Tenants cannot forge it (nobody but cluster admins and
the operator may patch the CRD, and the operator only that one CRD); Leases, which tenants may
be allowed to write in their own namespaces, are never trusted to name a cluster owner.

Writes are fenced (``Fenced``): before each write through ``kube.Kube`` the operator confirms it
still leads: without an API call while its last renewal is younger than the renew deadline,
else by renewing on the spot. A leader paused past its deadline (SIGSTOP, a stalled VM) thus
renews or learns it lost before it writes again. The margin between the renew deadline and the
Lease duration covers a write already under way when the pause began.

Unlike client-go, a leader that cannot reach the API server does not give up at the renew
deadline: its writes are fenced from then on (they could not succeed anyway), and once the API
server answers again it renews, conditionally on the Lease's resourceVersion, or learns that
another replica took over and exits. So an API server outage longer than the deadline (an etcd
restart on an edge control plane) does not restart every operator replica.
"""

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

log = logging.getLogger("egpu_operator.leader")

#: Exit status of an operator that lost its leadership: the kubelet restarts it as a follower.
LOST_EXIT_CODE = 3
#: ``kube.Kube`` methods that only read; every other method writes and is fenced.
READS = frozenset({"pods_on_node", "get_node", "list_maintenances", "get_resource_claim"})


@dataclass(frozen=True)
class LeaderConfig:
    """Where the Lease is and its timing; defaults as client-go's (15 s, 10 s, 2 s)."""

    #: The release namespace; the Lease lives here (a Role grants it, not the ClusterRole).
    namespace: str = "egpu-system"
    lease_name: str = "egpu-operator"
    #: Who this replica is in ``holderIdentity``; empty: ``<hostname>_<random>``, unique per process.
    #: The chart sets the pod name: a restarted container of the same pod resumes its own Lease at once.
    identity: str = ""
    #: A Lease unchanged this long, as a follower observed it, is free to take over.
    lease_duration_s: float = 15.0
    #: The leader writes nothing when its last renewal is older than this; it renews before writing again.
    renew_deadline_s: float = 10.0
    #: How often the Lease is renewed or, by a follower, looked at.
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.namespace or not self.lease_name:
            raise ValueError("the leader election namespace and Lease name must not be empty")
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration "
                f"(got {self.retry_period_s:g}, {self.renew_deadline_s:g} and {self.lease_duration_s:g} s)"
            )

    @property
    def ref(self) -> str:
        """The Lease as the cluster claim names it."""
        return f"{self.namespace}/{self.lease_name}"

    def with_identity(self) -> "LeaderConfig":
        """This config with an identity unique to this process when none was set."""
        if self.identity:
            return self
        return replace(self, identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")


# -- what a Lease says, and what this process saw of it -------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease the election reads. ``holder`` is empty once released."""

    holder: str
    duration_s: float
    renewed: str | None = None  # renewTime as written; compared for change only, never with our clock
    transitions: int = 0
    version: str = ""  # resourceVersion: a write based on an older one is refused (409)
    acquired: str | None = None


def record_of(lease: Mapping[str, Any] | None) -> LeaseRecord | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_s=float(spec.get("leaseDurationSeconds") or 0),
        renewed=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        acquired=spec.get("acquireTime"),
    )


@dataclass(frozen=True)
class Observation:
    """A Lease as last seen, and when (this process's monotonic clock) it was last seen to change."""

    record: LeaseRecord | None
    changed_at: float


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation:
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def live(observation: Observation, now: float) -> bool:
    """Whether the Lease has a holder that may still be renewing it: held, and seen to change within its duration.
    A Lease first seen just now counts as live: only watching it stand still proves its holder gone."""
    record = observation.record
    return record is not None and bool(record.holder) and now - observation.changed_at < record.duration_s


# -- decisions --------------------------------------------------------------------------------------


class Action(Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours
    TAKE = "take"  # free: released, or unchanged for its duration
    WAIT = "wait"  # another holds it


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(observation: Observation, identity: str, now: float) -> Decision:
    """What to do with the Lease as observed. Pure: no clock but ``now`` (monotonic), no API."""
    record = observation.record
    if record is None:
        return Decision(Action.CREATE, "no Lease yet")
    if record.holder == identity:
        return Decision(Action.RENEW, "held by this replica")
    if not record.holder:
        return Decision(Action.TAKE, "released by its last holder")
    if not live(observation, now):
        unchanged_s = now - observation.changed_at
        return Decision(
            Action.TAKE, f"held by {record.holder} but unchanged for {unchanged_s:.1f} s (duration {record.duration_s:g} s)"
        )
    return Decision(Action.WAIT, f"held by {record.holder}")


def lease_spec(config: LeaderConfig, record: LeaseRecord | None, now_wall: datetime, holder: str | None = None) -> dict[str, Any]:
    """The spec to write: renewed by ``config.identity`` (or released, ``holder=""``)."""
    holder = config.identity if holder is None else holder
    changes_hands = record is None or record.holder != holder
    stamp = now_wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "holderIdentity": holder,
        # A released Lease says 1 s, as client-go's: a follower takes it over at its next look.
        "leaseDurationSeconds": max(1, round(config.lease_duration_s)) if holder else 1,
        "acquireTime": stamp if changes_hands or record is None else record.acquired,
        "renewTime": stamp,
        "leaseTransitions": (record.transitions if record else 0) + (1 if record is not None and changes_hands and holder else 0),
    }


class Claim(Enum):
    MINE = "mine"  # the claim names our Lease
    TAKE = "take"  # free: write our Lease into it
    REFUSE = "refuse"  # another live release holds the cluster


def unreadable_claim(claimed: str, mine: str) -> str:
    """Why a release refuses when the Lease the cluster claim names may not be read (RBAC)."""
    return (
        f"another egpu-operator may act in this cluster: the cluster claim names the Lease {claimed}, which this "
        f"release ({mine}) may not read, so it refuses to act. Run one operator per cluster: uninstall one; if "
        f"that release is gone, remove its claim: kubectl annotate crd inferencedeployments.egpu-operator.io "
        f"egpu-operator.io/operator-lease-"
    )


def decide_claim(claimed: str | None, mine: str, other: Observation | None, now: float) -> tuple[Claim, str]:
    """Whether this release may act in the cluster. ``claimed``: the CRD's annotation; ``other``:
    the Lease it names, as observed (None when it names ours or nothing)."""
    if not claimed:
        return Claim.TAKE, "the cluster claim is free"
    if claimed == mine:
        return Claim.MINE, "the cluster claim is this release's"
    if other is None or not live(other, now):
        return Claim.TAKE, f"the cluster claim names {claimed}, whose Lease is gone, released or stale"
    return Claim.REFUSE, (
        f"another egpu-operator acts in this cluster: the release whose Lease is {claimed} holds the "
        f"cluster claim; this one ({mine}) refuses to act. Run one operator per cluster: uninstall one "
        "of the two releases (this one takes over once the other's Lease stops being renewed)"
    )


# -- the API the election needs (the API layer implements it: kube.ApiLeases, fakekube.FakeLeases) -----


class LeaseUnreadable(Exception):
    """The API server refused to show a Lease (403): this replica's RBAC does not reach it."""


class LeaseApi(Protocol):
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> bool:
        """False when it exists already (someone else was quicker)."""

    def update_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str) -> bool:
        """False when the Lease changed since ``resource_version`` was read (409)."""

    def get_claim(self) -> tuple[str | None, str] | None:
        """The cluster claim annotation and the CRD's resourceVersion; None when the CRD is not there."""

    def set_claim(self, value: str, resource_version: str) -> bool:
        """False when the CRD changed since ``resource_version`` was read."""


# -- the loop -----------------------------------------------------------------------------------------


class State(Enum):
    FOLLOWER = "follower"
    REFUSING = "refusing"  # leads its release, but another release holds the cluster
    LEADER = "leader"
    LOST = "lost"  # was leader, is not any more; the process exits
    RELEASED = "released"  # stopping: let go of the Lease


@dataclass
class Elector:
    """One replica's side of the election. ``run`` loops in a thread of its own; ``confirm`` is
    called by the writers (through ``Fenced``) from any thread."""

    config: LeaderConfig
    api: LeaseApi
    on_lead: Callable[[], None]
    on_lost: Callable[[str], None]
    on_refuse: Callable[[str | None], None] = lambda reason: None
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)
    state: State = State.FOLLOWER
    renewed_at: float | None = None  # monotonic, when our last successful write of the Lease was sent
    _seen: Observation | None = None
    _other: Observation | None = None  # the other release's Lease, while the claim names it
    _refusal: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def holds(self) -> bool:
        """Leads and renewed recently enough to write without asking the API server."""
        return self.state is State.LEADER and self.holds_lease_within_deadline()

    def confirm(self) -> bool:
        """Before a write: True only while this replica leads. Renews on the spot when the last renewal
        is older than the renew deadline (after a pause), so a deposed leader learns it before writing."""
        if self.holds():
            return True
        if self.state is not State.LEADER:
            return False
        self.round()
        return self.holds()

    def round(self) -> State:
        """One look at the Lease (and, while leading, the claim): acquire, renew, or wait."""
        with self._lock:
            if self.state in (State.LOST, State.RELEASED):
                return self.state
            try:
                held = self._lease_round()
                if held:
                    self._claim_round()
            except Exception as error:
                # The API server is away: nothing proves another replica took over, and past the renew
                # deadline ``holds`` fences every write until a round succeeds again.
                log.warning("leader election: the API server did not answer", extra={"error": str(error)[:300]})
                held = self.state is not State.FOLLOWER
            if not held and self.state in (State.LEADER, State.REFUSING):
                self._lose(f"another replica holds the Lease {self.config.ref}")
            return self.state

    def holds_lease_within_deadline(self) -> bool:
        return self.renewed_at is not None and self.clock() - self.renewed_at < self.config.renew_deadline_s

    def release(self) -> None:
        """On SIGTERM: stop writing, then hand the Lease back so a follower takes over at once."""
        held = self.state in (State.LEADER, State.REFUSING)
        self.state = State.RELEASED  # before waiting for a round in flight: writers stop at once
        with self._lock:
            if not held:
                return
            try:
                current = record_of(self.api.get_lease(self.config.namespace, self.config.lease_name))
                if current is not None and current.holder == self.config.identity:
                    spec = lease_spec(self.config, current, self.wall(), holder="")
                    self.api.update_lease(self.config.namespace, self.config.lease_name, spec, current.version)
                    log.info("leadership released", extra=self._extra())
            except Exception as error:
                log.warning("could not release the Lease: it expires by itself", extra={"error": str(error)[:300]})

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set() and self.state not in (State.LOST, State.RELEASED):
            started = self.clock()
            self.round()
            stopping.wait(max(0.0, self.config.retry_period_s - (self.clock() - started)))

    # -- inside a round (under the lock) ----------------------------------------------------------

    def _lease_round(self) -> bool:
        """Whether this replica holds its release's Lease after this look."""
        config = self.config
        self._seen = observe(self._seen, record_of(self.api.get_lease(config.namespace, config.lease_name)), self.clock())
        decision = decide(self._seen, config.identity, self.clock())
        if decision.action is Action.WAIT:
            return False
        record = self._seen.record
        spec = lease_spec(config, record, self.wall())
        # Counted from before the request: a follower cannot have seen the renewal any earlier.
        sent_at = self.clock()
        if record is None:
            written = self.api.create_lease(config.namespace, config.lease_name, spec)
        else:
            written = self.api.update_lease(config.namespace, config.lease_name, spec, record.version)
        if written:
            self.renewed_at = sent_at
            if decision.action is not Action.RENEW or self.state is State.FOLLOWER:
                log.info("Lease acquired", extra=self._extra(reason=decision.reason))
        # A renewal refused as stale (409) proves nothing yet: the next round reads the Lease again.
        return written or decision.action is Action.RENEW

    def _claim_round(self) -> None:
        now, mine = self.clock(), self.config.ref
        found = self.api.get_claim()
        if found is None:
            # No CRD (deleted, not yet installed): no release can claim the cluster meanwhile. A
            # leader carries on (it re-claims once the CRD is back); a new one waits for it.
            return None if self.state is State.LEADER else self._refuse("the InferenceDeployment CRD is not installed")
        claimed, version = found
        if claimed and claimed != mine:
            namespace, _, name = claimed.partition("/")
            try:
                self._other = observe(self._other, record_of(self.api.get_lease(namespace, name)), now)
            except LeaseUnreadable:
                # Unreadable is not gone: acting on it could make two releases act at once.
                return self._refuse(unreadable_claim(claimed, mine))
        else:
            self._other = None
        verdict, reason = decide_claim(claimed, mine, self._other, now)
        if verdict is Claim.REFUSE:
            return self._refuse(reason)
        if verdict is Claim.TAKE and not self.api.set_claim(mine, version):
            return None  # someone else wrote it meanwhile: look again next round
        if verdict is Claim.TAKE:
            log.info("cluster claim taken", extra=self._extra(reason=reason))
        self._lead()

    def _lead(self) -> None:
        if self.state in (State.LEADER, State.RELEASED):
            return
        self.state, self._refusal = State.LEADER, None
        self.on_refuse(None)
        log.info("leadership acquired: this replica acts", extra=self._extra())
        self.on_lead()

    def _refuse(self, reason: str) -> None:
        if self.state is State.LEADER:
            return self._lose(f"it may no longer act: {reason}")
        self.state = State.REFUSING
        if reason != self._refusal:
            self._refusal = reason
            log.warning("refusing to act", extra=self._extra(reason=reason))
            self.on_refuse(reason)
        return None

    def _lose(self, reason: str) -> None:
        self.state = State.LOST
        log.warning("leadership lost", extra=self._extra(reason=reason))
        self.on_lost(reason)

    def _extra(self, **more: str) -> dict[str, str]:
        return {"identity": self.config.identity, "lease": self.config.ref, **more}


class NotLeader(Exception):
    """A write was stopped: this replica does not lead (any more)."""


class Fenced:
    """``kube.Kube`` whose writes pass only while ``confirm()`` says this replica leads. Reads pass
    through. Every method not known to read is fenced, so a new write method is fenced too."""

    def __init__(self, kube: Any, confirm: Callable[[], bool]) -> None:
        self._kube, self._confirm = kube, confirm

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._kube, name)
        if name in READS or name.startswith("_") or not callable(attribute):
            return attribute

        def fenced(*args: Any, **kwargs: Any) -> Any:
            if not self._confirm():
                raise NotLeader(f"{name} refused: this replica does not lead")
            return attribute(*args, **kwargs)

        return fenced
