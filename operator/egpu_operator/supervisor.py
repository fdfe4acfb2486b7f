"""The process around kopf: its CRDs watched, its core restarted when one of them is reinstalled,
and a stop that always ends in seconds.

Why: kopf cannot outlive a CRD of a resource it watches. Once the CRD is gone, its watch of that
resource fails on HTTP 404 (kopf notes the race in ``observation._update_resources``; with
``settings.scanning.disabled`` nothing even tries to stop that watch), and kopf's core is left
failing: /healthz answered 503, GPUMaintenances were no longer processed, a reinstalled CRD did not
help, and SIGTERM was ignored for over 35 s (issue 21). So the operator checks its own CRDs
(``CrdPresence``: a GET of each by name, the only CRD right the chart grants): while one is
missing, /readyz names it and no kopf core runs; once all are back (a new uid is a reinstall), a
fresh core starts and lists everything again. Everything kopf and the ``Operator`` hold is
rebuilt, as a restarted pod would, without the kubelet's crash-loop back-off.

kopf runs in a thread of its own, on a loop of its own; the main thread keeps the signals. A
SIGTERM asks the core to stop and waits at most ``STOP_GRACE_S``: a core stuck in a watch or in a
blocked handler cannot hold the process past the kubelet's grace period.

``decide`` is the pure part: what to do given the stop request, the core and the CRDs seen.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Protocol

from egpu_operator import metrics
from egpu_operator.health import HealthServer
from egpu_operator.kube import GROUP, MAINTENANCES, PLURAL
from egpu_operator.metrics import REGISTRY

log = logging.getLogger("egpu_operator.supervisor")
#: The CRDs the operator cannot work without, by name.
REQUIRED_CRDS: tuple[str, ...] = (f"{PLURAL}.{GROUP}", f"{MAINTENANCES}.{GROUP}")
#: How often each CRD is read: a deletion shows on /readyz within this, a reinstall restarts the core.
POLL_S = 2.0
#: After a stop request, the process exits within this whether the kopf core has stopped or not.
#: kopf's own shutdown gives its tasks up to 5 s; the kubelet's grace period is 30 s.
STOP_GRACE_S = 8.0
#: A core that did not stop within STOP_GRACE_S for a restart: exit, and the kubelet starts afresh.
STUCK_EXIT_CODE = 5
#: A core that stopped by itself while every CRD stayed: exit non-zero, as kopf's failure was.
FAILED_EXIT_CODE = 1

#: CRD name -> its uid, or None when it is not installed. A name absent: never read yet (unknown).
Installed = Mapping[str, str | None]


class CrdApi(Protocol):
    def crd_uid(self, name: str) -> str | None:
        """The CRD's uid; None when there is no such CRD. Raises when the API server cannot say."""
        ...


class Checks(Protocol):
    """What /healthz and /readyz ask of a running core (``runtime.Operator``)."""

    def health_problem(self) -> str | None: ...

    def readiness_problem(self) -> str | None: ...


class Core(Protocol):
    """One kopf run (``KopfCore``; a fake in unit tests)."""

    operator: Checks

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, grace_s: float) -> bool: ...


class Action(Enum):
    WAIT = "wait"  # nothing to do now
    START = "start"  # every CRD is installed and no core runs
    RESTART = "restart"  # a CRD went or was reinstalled under the running core: stop it, start afresh
    STOP = "stop"  # SIGTERM or SIGINT
    FAIL = "fail"  # the core stopped by itself while every CRD stayed


def missing(installed: Installed, required: tuple[str, ...] = REQUIRED_CRDS) -> str | None:
    """None when every required CRD is installed, else one sentence naming those that are not (/readyz)."""
    absent = [name for name in required if installed.get(name) is None]
    if not absent:
        return None
    unread = [name for name in absent if name not in installed]
    if len(unread) == len(absent):
        return f"waiting for the first read of CRD {', '.join(absent)}"
    return (
        f"CRD {', '.join(absent)} not installed: the operator waits for it "
        "(install the chart's CRDs, or kubectl apply -f crds/ from the release)"
    )


def decide(stop_requested: bool, core_alive: bool, started_with: Installed | None, installed: Installed) -> Action:
    """What the supervisor does next. ``started_with``: the CRDs the running core was started on
    (None: no core). A CRD that cannot be read keeps its last uid (unknown is not gone)."""
    if stop_requested:
        return Action.STOP
    if started_with is None:
        return Action.START if missing(installed) is None else Action.WAIT
    if dict(installed) != dict(started_with):
        return Action.RESTART
    return Action.WAIT if core_alive else Action.FAIL


class CrdPresence:
    """The required CRDs' uids, read every ``POLL_S`` by a thread of its own."""

    def __init__(self, api: CrdApi, required: tuple[str, ...] = REQUIRED_CRDS) -> None:
        self._api, self._required = api, required
        self._installed: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egpu-crd-presence", daemon=True)

    def installed(self) -> dict[str, str | None]:
        with self._lock:
            return dict(self._installed)

    def refresh(self) -> dict[str, str | None]:
        """Read every CRD now; one the API server cannot answer for keeps its last value."""
        for name in self._required:
            try:
                uid = self._api.crd_uid(name)
            except Exception as error:
                log.warning("cannot read a CRD: keeping what was seen last", extra={"crd": name, "error": str(error)[:300]})
                continue
            with self._lock:
                before, self._installed[name] = self._installed.get(name, ""), uid
            if before != uid and uid is None:
                log.warning("CRD missing", extra={"crd": name})
            elif before != uid:
                log.info("CRD installed", extra={"crd": name, "uid": uid})
        return self.installed()

    def start(self) -> "CrdPresence":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.refresh()
            self._stopping.wait(POLL_S)


class KopfCore:
    """One ``Operator`` and the kopf run that drives it, on a loop in a thread of their own.
    ``run`` is ``kopf.run`` with its registry bound; it gets the loop and the stop flag."""

    def __init__(self, operator: Checks, run: Callable[[asyncio.AbstractEventLoop, "asyncio.Future[None]"], None]) -> None:
        self.operator, self._run = operator, run
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, name="egpu-kopf", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_s: float) -> bool:
        """Ask kopf to stop (its cleanup stops the ``Operator``); True when it did within ``grace_s``."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed: kopf has ended
            self._loop.call_soon_threadsafe(self._raise_stop)
        self._thread.join(grace_s)
        return not self._thread.is_alive()

    def _raise_stop(self) -> None:
        if not self._stop.done():
            self._stop.set_result(None)

    def _main(self) -> None:
        # A loop given to kopf.run is not closed by it, and no default-executor shutdown can hang its end.
        asyncio.set_event_loop(self._loop)
        try:
            self._run(self._loop, self._stop)
        except BaseException as error:  # whatever ended kopf, the supervisor decides what follows
            log.error("the kopf core ended with an error", extra={"error": f"{type(error).__name__}: {error}"[:500]})
        finally:
            self._loop.close()


class Supervisor:
    """Runs kopf cores one after another (``make_core``) while the CRDs allow, until a stop request."""

    def __init__(self, presence: CrdPresence, make_core: Callable[[], Core], grace_s: float = STOP_GRACE_S) -> None:
        self._presence, self._make_core, self._grace_s = presence, make_core, grace_s
        self._core: Core | None = None
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """From a signal handler: only sets a flag."""
        self._stop.set()

    def health_problem(self) -> str | None:
        core = self._core
        return None if core is None else core.operator.health_problem()

    def readiness_problem(self) -> str | None:
        problem = missing(self._presence.installed())
        if problem is not None:
            return problem
        core = self._core
        return "starting the kopf core" if core is None else core.operator.readiness_problem()

    def serve_http(self, port: int) -> HealthServer | None:
        """/metrics, /healthz and /readyz on ``port`` (0: none), for as long as the process runs."""
        if not port:
            return None
        metrics.watch_readiness(lambda: self.readiness_problem() is None)
        return HealthServer(port, REGISTRY, self.health_problem, self.readiness_problem).start()

    def run(self) -> int:
        """Until a stop request; the exit code of the process."""
        self._presence.start()
        started_with: Installed | None = None
        while True:
            core = self._core
            installed = self._presence.installed()
            if core is not None and not core.alive:
                installed = self._presence.refresh()  # did it die of a CRD going? look now, not at the next poll
            action = decide(self._stop.is_set(), core is not None and core.alive, started_with, installed)
            if action is Action.WAIT:
                self._stop.wait(0.2)
            elif action is Action.START:
                self._core, started_with = self._make_core(), installed
                self._core.start()
                log.info("kopf core started", extra={"crds": dict(installed)})
            elif action is Action.RESTART:
                log.warning("a CRD was deleted or reinstalled: restarting the kopf core to list everything again",
                            extra={"before": dict(started_with or {}), "now": dict(installed)})  # fmt: skip
                if not self._stop_core():
                    return STUCK_EXIT_CODE
                started_with = None
            else:
                return self._end(action)

    def _end(self, action: Action) -> int:
        self._presence.stop()
        if action is Action.FAIL:
            log.error("the kopf core stopped by itself: exiting", extra={"exit_code": FAILED_EXIT_CODE})
            return FAILED_EXIT_CODE
        self._stop_core()  # stuck or not, the process ends now: that is what the stop request asked
        return 0

    def _stop_core(self) -> bool:
        """Stop the running core within the grace period; False (logged) when it is stuck."""
        core, self._core = self._core, None  # /healthz judges no core that is being stopped
        if core is None or core.stop(self._grace_s):
            return True
        log.error("the kopf core did not stop in time: exiting anyway",
                  extra={"grace_s": self._grace_s, "exit_code": STUCK_EXIT_CODE})  # fmt: skip
        return False
