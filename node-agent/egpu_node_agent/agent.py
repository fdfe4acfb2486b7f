"""The node agent's loop: read GPUs, act on power requests, learn which GPU each pod got, publish
what changed, renew the Lease.

Each poll is idempotent: it recomputes everything from NVML, sysfs and the node's
annotations, so a restarted agent converges without churn and a limit lost to a driver
reload is re-applied. The loop wakes early when the node changes (a new power request),
so a request does not wait for the next tick.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from egpu_api import keys
from egpu_api.assignments import dump_assignments
from egpu_api.gpus import GpuStatus, dump_gpus
from egpu_api.power import (
    EXTERNALLY_MANAGED,
    PowerContractError,
    PowerLimitStatus,
    dump_status,
    parse_request,
    parse_status,
)
from egpu_node_agent import gfd
from egpu_node_agent.assignments import AssignmentSource
from egpu_node_agent.labels import gpu_statuses, node_labels
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import GpuBackend, PowerLimitError
from egpu_node_agent.power import PowerAction, PowerPlan, plan_power, plan_restore
from egpu_node_agent.publisher import Publisher
from egpu_node_agent.readings import GpuReading

log = logging.getLogger("egpu_node_agent.agent")


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    poll_interval_s: float = 10.0
    # Read-only never changes a GPU: power requests are planned and reported as dry runs.
    read_only: bool = False
    lease_duration_s: int = 40
    # Metrics-only readings (PCIe throughput samples ~20 ms per call) are taken this often.
    telemetry_interval_s: float = 30.0
    min_poll_gap_s: float = 0.5
    # The model cache's sequential read rate in MB/s, declared or measured at start; None: unknown.
    storage_read_mbps: int | None = None


class NodeAgent:
    def __init__(
        self,
        config: AgentConfig,
        backend: GpuBackend,
        publisher: Publisher,
        metrics: AgentMetrics,
        measured: dict[str, tuple[int, int]] | None = None,
        assignments: AssignmentSource | None = None,
    ) -> None:
        self.config = config
        # Which GPU each pod got (the kubelet's PodResources, or the simulation's); None: not asked.
        self.assignments = assignments
        # Probe results by PCI bus id: (pinned, pageable) MB/s, measured once at start.
        self.measured = measured or {}
        self.backend = backend
        self.publisher = publisher
        self.metrics = metrics
        self._last_lease = -float("inf")  # the first poll renews
        self._last_telemetry = -float("inf")
        self._health: dict[str, str] = {}  # uuid -> last health, to raise events on transitions
        self._reported: set[str] = set()  # error messages already raised as events
        # The malformed power request last reported; None while the request is well formed. A bad
        # value is reported once each time it changes, not once per process nor once per poll.
        self._bad_request: str | None = None
        # Why the last read of the GPUs failed; None while they read. Reported once per failure.
        self._blind_reason: str | None = None

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; an API or NVML hiccup is logged and counted, never fatal.
        Whoever sets ``stop`` also sets ``publisher.changed``, or the loop sleeps out its interval."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception as error:
                self._count_error(error)
                log.warning("poll failed", extra={"node": self.config.node_name, "error": str(error)})
            self.publisher.changed.wait(self.config.poll_interval_s)
            self.publisher.changed.clear()
            stop.wait(self.config.min_poll_gap_s)

    def poll(self) -> None:
        """One pass: read, act on power, publish what changed, renew the Lease. A GPU read that fails
        makes the poll ``_blind``; a write the API server refuses is retried by the next poll."""
        node = self.config.node_name
        with self.metrics.poll_seconds.labels(node).time():
            telemetry = time.monotonic() - self._last_telemetry >= self.config.telemetry_interval_s
            try:
                readings = self.backend.read(telemetry)
            except Exception as error:
                self._blind(error)
                return
            self._blind_reason = None
            if telemetry:
                self._last_telemetry = time.monotonic()
            readings, power_status = self._act_on_power(readings)
            gpus = gpu_statuses(readings, self.measured)
            self._note_health_changes(gpus)
            self._compare_gfd(readings)
            self._write("publish", lambda: self._publish(gpus, power_status))
            self._write("set_condition", lambda: self._keep_condition(gpus))
            self._renew_lease()
        links = {gpu.uuid: gpu.link for gpu in gpus if gpu.link is not None}
        shared = {gpu.uuid: gpu.path for gpu in gpus}
        self.metrics.observe(node, readings, {gpu.uuid: gpu.health for gpu in gpus}, telemetry, power_status, links, shared)

    def _act_on_power(self, readings: list[GpuReading]) -> tuple[list[GpuReading], dict[str, PowerLimitStatus]]:
        """Plan and apply the requested limits; the readings as NVML reports them afterwards, and the status."""
        request, previous = self._power_annotations()
        # A malformed request is no request for no GPU: keep every limit (and its status) as it is.
        plan = (
            PowerPlan([], dict(previous)) if request is None else plan_power(request, previous, readings, self.config.read_only)
        )
        self._note_ownership_changes(previous, plan.status, plan.left)
        if plan.actions and not self.config.read_only and self._apply(plan.actions, plan.status):
            readings = self.backend.read(telemetry=False)  # publish the limits as NVML now reports them
        return readings, plan.status

    def _publish(self, gpus: list[GpuStatus], power_status: dict[str, PowerLimitStatus]) -> None:
        annotations: dict[str, str | None] = {
            keys.GPUS_ANNOTATION: dump_gpus(gpus),
            keys.POWER_STATUS_ANNOTATION: dump_status(power_status) if power_status else None,
        }
        if self.assignments is None:
            # Not asked (turned off, fake GPUs): what an earlier run published would go stale.
            annotations[keys.GPU_ASSIGNMENTS_ANNOTATION] = None
        elif (assigned := self._assignments(self.assignments)) is not None:
            annotations[keys.GPU_ASSIGNMENTS_ANNOTATION] = dump_assignments(assigned)
        if self.publisher.publish(node_labels(gpus, self.config.storage_read_mbps), annotations):
            self.metrics.publishes.labels(self.config.node_name).inc()

    def _write(self, what: str, write: Callable[[], None]) -> None:
        """Run one write to the node; if the API server refuses it, log and count it and go on: the
        Lease is still renewed (the agent is alive, the API server had a moment), and the next poll
        diffs against the node as last seen, so it sends the same write again."""
        try:
            write()
        except Exception as error:
            self._count_error(error)
            log.warning(
                "write failed; retried next poll", extra={"node": self.config.node_name, "write": what, "error": str(error)}
            )

    def _blind(self, error: Exception) -> None:
        """The GPUs cannot be read (driver unloaded, NVML failing): unknown, not healthy and not gone.
        The labels stay as last published, the GPUHealthy condition turns Unknown, an Event says why once
        per failure, and the Lease is not renewed: it vouches that the published facts are current, and
        a Lease left to age is what makes the operator send new replicas elsewhere (unknown liveness)."""
        self._count_error(error)
        message = f"cannot read the GPUs: {error}; labels are kept as last read until NVML answers again"
        log.warning(message, extra={"node": self.config.node_name, "reason": "GPUReadFailed"})
        if message != self._blind_reason:
            self._blind_reason = message
            self.publisher.event("GPUReadFailed", message)
        self._write("set_condition", lambda: self._set_condition(None, "GPUReadFailed", message))

    def _count_error(self, error: Exception) -> None:
        self.metrics.errors.labels(self.config.node_name, type(error).__name__).inc()

    # -- power ---------------------------------------------------------------------------------

    def _power_annotations(self) -> tuple[dict[str, int] | None, dict[str, PowerLimitStatus]]:
        """The request (None when malformed: reported, and every limit kept) and the last status."""
        annotations = self.publisher.annotations()
        text = annotations.get(keys.POWER_REQUEST_ANNOTATION)
        request: dict[str, int] | None
        try:
            request = parse_request(text)
            self._bad_request = None
        except PowerContractError as error:
            request = None
            if text != self._bad_request:
                self._bad_request = text
                message = f"{error}; the current power limits are kept until it is fixed"
                self.publisher.event("InvalidPowerRequest", message)
                log.warning(message, extra={"node": self.config.node_name, "reason": "InvalidPowerRequest"})
        try:
            previous = parse_status(annotations.get(keys.POWER_STATUS_ANNOTATION))
        except PowerContractError:
            previous = {}
        return request, previous

    def _apply(self, actions: list[PowerAction], status: dict[str, PowerLimitStatus]) -> bool:
        """Run the actions; record results in ``status``; return whether any limit changed."""
        changed = False
        for action in actions:
            try:
                self.backend.set_power_limit(action.uuid, action.watts)
            except PowerLimitError as error:
                self.metrics.errors.labels(self.config.node_name, "PowerLimitError").inc()
                status[action.uuid] = status[action.uuid].model_copy(update={"error": str(error)})
                self._report_once("PowerLimitFailed", str(error))
                continue
            changed = True
            log.info(
                "power limit set",
                extra={"node": self.config.node_name, "gpu": action.uuid, "watts": action.watts, "why": action.why},
            )
            if action.why != "restore default":
                update = {"applied_watts": action.watts, "set_by_agent_watts": action.watts}
                status[action.uuid] = status[action.uuid].model_copy(update=update)
            else:
                del status[action.uuid]  # back at default: no longer ours to report
        return changed

    def _note_ownership_changes(
        self, previous: dict[str, PowerLimitStatus], status: dict[str, PowerLimitStatus], left: dict[str, str]
    ) -> None:
        """An Event and a log line when a GPU's limit is handed over or taken back, and for limits left."""
        node = self.config.node_name
        for uuid, entry in status.items():
            before = previous.get(uuid)
            was_external = before is not None and before.state == EXTERNALLY_MANAGED
            if entry.state == EXTERNALLY_MANAGED and not was_external:
                self.publisher.event("PowerLimitExternallyManaged", f"GPU {uuid}: {entry.message}")
                log.warning(
                    "power limit set by someone else; not re-applying",
                    extra={
                        "node": node,
                        "gpu": uuid,
                        "observed_watts": entry.applied_watts,
                        "expected_watts": entry.target_watts,
                    },
                )
            elif before is not None and was_external and entry.state != EXTERNALLY_MANAGED:
                changed = before.requested_watts != entry.requested_watts
                why = "the request changed" if changed else "the limit is back at the target"
                self.publisher.event(
                    "PowerLimitManaged", f"GPU {uuid}: the agent manages its power limit again: {why}", warning=False
                )
                log.info("power limit managed again", extra={"node": node, "gpu": uuid, "why": why})
        for uuid, reason in left.items():
            self._report_once("PowerLimitLeft", f"GPU {uuid}: {reason}", warning=False)

    def restore_power(self, why: str) -> PowerPlan:
        """Put back the default limit of every GPU whose limit the agent set, because it stops managing
        power (``why``, for the Event); say what it restored and what it left. The limits come first:
        reporting is best effort, as the API may already be going away (an uninstall)."""
        node = self.config.node_name
        _, previous = self._power_annotations()
        plan = plan_restore(previous, self.backend.read(telemetry=False), previous)
        left = dict(plan.left)
        restored: list[PowerAction] = []
        for action in plan.actions:
            try:
                self.backend.set_power_limit(action.uuid, action.watts)
            except PowerLimitError as error:
                left[action.uuid] = f"restoring {action.watts} W failed: {error}"
                continue
            restored.append(action)
            log.info("power limit restored", extra={"node": node, "gpu": action.uuid, "watts": action.watts, "why": why})
        for uuid, reason in left.items():
            log.warning("power limit left", extra={"node": node, "gpu": uuid, "reason": reason, "why": why})
        summary = f"{why}: restored the default limit of {len(restored)} GPU(s)" + "".join(
            f"; {action.uuid} to {action.watts} W" for action in restored
        )
        summary += "".join(f"; {uuid} {reason}" for uuid, reason in left.items()) if left else "; left none"
        # What is left stays in the status, no longer the agent's; what was restored is forgotten.
        status = {
            uuid: entry.model_copy(update={"set_by_agent_watts": None, "message": left[uuid]})
            for uuid, entry in previous.items()
            if uuid in left
        }
        try:
            self.publisher.publish(None, {keys.POWER_STATUS_ANNOTATION: dump_status(status) if status else None})
            self.publisher.event("PowerLimitsRestored", summary, warning=bool(left))
        except Exception as error:  # the API may be gone (uninstall): the limits are back all the same
            log.warning("could not report the restored power limits", extra={"node": node, "error": str(error)})
        return PowerPlan(restored, status, left)

    def _assignments(self, source: AssignmentSource) -> dict[str, list[str]] | None:
        """Which GPU each pod got; None (unknown) leaves the published annotation as it is."""
        try:
            return source.assignments()
        except Exception as error:  # a source is not to raise; if one does, the rest of the poll still runs
            self.metrics.errors.labels(self.config.node_name, type(error).__name__).inc()
            log.warning("GPU assignments failed", extra={"node": self.config.node_name, "error": str(error)})
            return None

    # -- health --------------------------------------------------------------------------------

    def _note_health_changes(self, gpus: list[GpuStatus]) -> None:
        for gpu in gpus:
            before = self._health.get(gpu.uuid, "ok")
            if gpu.health != before:
                if gpu.health == "lost":
                    self.publisher.event("GPULost", f"GPU {gpu.index} ({gpu.uuid}) is lost: {'; '.join(gpu.reasons)}")
                elif gpu.health == "degraded":
                    self.publisher.event("PCIeLinkDegraded", f"GPU {gpu.index}: {'; '.join(gpu.reasons)}")
                else:
                    self.publisher.event("GPURecovered", f"GPU {gpu.index} ({gpu.uuid}) is healthy again", warning=False)
                log.warning(
                    "GPU health changed",
                    extra={"node": self.config.node_name, "gpu": gpu.uuid, "from": before, "to": gpu.health},
                )
            self._health[gpu.uuid] = gpu.health

    def _keep_condition(self, gpus: list[GpuStatus]) -> None:
        lost = [gpu for gpu in gpus if gpu.health == "lost"]
        degraded = [gpu for gpu in gpus if gpu.health == "degraded"]
        if lost:
            reason, message = "GPULost", "; ".join(f"GPU {g.index}: {', '.join(g.reasons)}" for g in lost)
        elif degraded:
            reason, message = "PCIeLinkDegraded", "; ".join(f"GPU {g.index}: {', '.join(g.reasons)}" for g in degraded)
        else:
            reason, message = "AllGPUsHealthy", f"{len(gpus)} GPU(s) healthy"
        self._set_condition(not lost and not degraded, reason, message)

    def _set_condition(self, healthy: bool | None, reason: str, message: str) -> None:
        self.publisher.set_condition(healthy, reason, message[:1024])

    def _compare_gfd(self, readings: list[GpuReading]) -> None:
        """Flag GPU Feature Discovery labels that disagree with NVML: an Event and a log line once per
        disagreement, and a metric per label; the labels are GFD's and stay as they are."""
        labels = self.publisher.labels()
        disagreements = gfd.compare(labels, readings)
        for disagreement in disagreements:
            self._report_once("GFDLabelsDisagree", disagreement.sentence())
        present = [label for label in gfd.COMPARED if label in labels]
        self.metrics.observe_gfd(self.config.node_name, present, [d.label for d in disagreements])

    def _report_once(self, reason: str, message: str, warning: bool = True) -> None:
        if message not in self._reported:
            self._reported.add(message)
            self.publisher.event(reason, message, warning=warning)
            log.warning(message, extra={"node": self.config.node_name, "reason": reason})

    def _renew_lease(self) -> None:
        """Renew every quarter of the Lease's duration; a failed renewal raises (counted by ``run``)
        and is tried again on the next poll, as ``_last_lease`` moves only on success."""
        now = time.monotonic()
        if now - self._last_lease >= self.config.lease_duration_s / 4:
            self.publisher.heartbeat(self.config.lease_duration_s)
            self._last_lease = now
