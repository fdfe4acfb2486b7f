"""The read seam: small list-and-watch informers, each keeping a slim view of one kind of object.

Why not kopf's indexes: kopf watches a resource cluster-wide and unfiltered (it filters on the
client), lists without paging and runs every event through per-object machinery; at 1,000 nodes
the kubelet Leases alone (one per node, renewed every 10 s) went through it to be dropped. Here
each informer asks the API server for only what the operator reads (a label selector, a field
selector, one namespace), lists in pages (``PAGE_SIZE``), then watches from the listing's
resourceVersion with bookmarks, and keeps what its ``transform`` returns (a slim view, or None:
not kept). An event whose slim view did not change costs one JSON parse and a comparison.

Failure is data: a watch that the server ends or breaks resumes from the last version seen; 410
Gone (the version expired) relists, and the relist reports the difference as changes; 404 (the
resource type is not served: a CRD or ``resource.k8s.io`` not installed) is retried with backoff
and reported as ``missing`` until it appears. ``Informer.state`` and ``Informers.problem`` say
which informers are not synced or missing, for ``/readyz``.

``Source`` is the seam to the API server (``ApiSource``, through the kubernetes client's
``ApiClient``); ``FakeSource`` is shipped beside it for tests, as ``FakeKube`` is for writes, and
an informer with no thread at all (``Informer.replace`` and ``Informer.apply``) serves the
controller tests (``tests/unit/operator/cluster.py``).

Threads: one per informer. ``stop`` shuts the open watch's connection down, so a thread blocked
reading it ends at once: SIGTERM ends the process within a second or two.
"""

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

log = logging.getLogger("egpu_operator.informers")
PAGE_SIZE = 500
WATCH_TIMEOUT_S = 300
MAX_BACKOFF_S = 30.0
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
#: (key, old slim view or None, new slim view or None): called from the informer's thread.
Handler = Callable[[Key, Any, Any], None]


class Stream(Protocol):
    """Watch events as parsed JSON objects; ``close`` may be called from another thread."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class Source(Protocol):
    """The API server as informers see it. Both raise ``ApiException`` with the HTTP status."""

    def list(self, path: str, query: Mapping[str, str]) -> dict[str, Any]: ...

    def watch(self, path: str, query: Mapping[str, str]) -> Stream: ...


@dataclass(frozen=True)
class Spec:
    """What one informer watches. ``path``: the collection URL (``/api/v1/pods``,
    ``/apis/coordination.k8s.io/v1/namespaces/egpu-system/leases``); ``transform``: the slim view
    kept of an object, None to keep nothing; ``indexes``: name -> the index keys of a slim view."""

    name: str
    path: str
    transform: Callable[[dict[str, Any]], Any]
    label_selector: str = ""
    field_selector: str = ""
    indexes: Mapping[str, Callable[[Any], Iterable[Hashable]]] = field(default_factory=dict)
    optional: bool = False  # missing is not a readiness problem (DRA on a cluster without it)

    def query(self) -> dict[str, str]:
        selectors = {"labelSelector": self.label_selector, "fieldSelector": self.field_selector}
        return {key: value for key, value in selectors.items() if value}


class Informer:
    """Slim views of one kind of object, kept current by one thread (``start``). Reads are safe from
    any thread; a slim view is replaced on a change, never changed in place."""

    def __init__(self, spec: Spec, source: Source | None = None, on_change: Handler | None = None) -> None:
        self.spec, self._source = spec, source
        self.on_change: Handler = on_change or (lambda key, old, new: None)
        self.on_gap: Callable[[], None] = lambda: None  # a relist after a break: events may have been missed
        self.state = "waiting"  # then "synced" or "missing"
        self.relists = 0
        self.first_backoff_s = 1.0  # doubled after each failure in a row, up to MAX_BACKOFF_S
        self._items: dict[Key, Any] = {}
        self._index: dict[str, dict[Hashable, dict[Key, Any]]] = {name: {} for name in spec.indexes}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream: Stream | None = None
        self._thread = threading.Thread(target=self._run, name=f"egpu-informer-{spec.name}", daemon=True)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: Key) -> Any:
        with self._lock:
            return self._items.get(key)

    def items(self) -> dict[Key, Any]:
        with self._lock:
            return dict(self._items)

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())

    def by(self, index: str, value: Hashable) -> list[Any]:
        with self._lock:
            return list(self._index[index].get(value, {}).values())

    def grouped(self, index: str) -> dict[Hashable, list[Any]]:
        with self._lock:
            return {value: list(found.values()) for value, found in self._index[index].items()}

    @property
    def settled(self) -> bool:
        """The first answer is in: synced, or known to be missing."""
        return self.state != "waiting"

    # -- changes (from the thread, or from a test) ----------------------------------------------

    def apply(self, kind: str, item: dict[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        key = _key(item)
        self._put(key, None if kind == "DELETED" else self.spec.transform(item))

    def replace(self, items: Iterable[dict[str, Any]]) -> None:
        """A full listing: what is not in it is gone. The first one makes the informer synced."""
        fresh = {_key(item): self.spec.transform(item) for item in items}
        with self._lock:
            gone = set(self._items) - set(fresh)
        for key in gone:
            self._put(key, None)
        for key, view in fresh.items():
            self._put(key, view)
        if self.state == "synced":
            self.relists += 1
            self.on_gap()
        self.state = "synced"

    def _put(self, key: Key, view: Any) -> None:
        with self._lock:
            old = self._items.get(key)
            if old == view:
                return  # heartbeats, status churn: nothing the operator reads
            self._unindex(key, old)
            if view is None:
                del self._items[key]
            else:
                self._items[key] = view
                for name, index_of in self.spec.indexes.items():
                    for value in index_of(view):
                        self._index[name].setdefault(value, {})[key] = view
        self.on_change(key, old, view)

    def _unindex(self, key: Key, old: Any) -> None:
        if old is None:
            return
        for name, index_of in self.spec.indexes.items():
            for value in index_of(old):
                found = self._index[name].get(value, {})
                found.pop(key, None)
                if not found:
                    self._index[name].pop(value, None)

    # -- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._source is None:
            raise RuntimeError(f"informer {self.spec.name} has no source to list and watch")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout_s: float) -> bool:
        """Whether the thread ended within ``timeout_s``."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        delay_s = self.first_backoff_s
        while not self._stop.is_set():
            try:
                version = self._list()
                delay_s = self.first_backoff_s
                while not self._stop.is_set():
                    version = self._watch(version)
            except ApiException as error:
                if error.status == 410:
                    continue  # our resourceVersion expired: list again
                if error.status == 404 and self.state != "missing":
                    log.warning("resource not served: retrying", extra={"informer": self.spec.name, "path": self.spec.path})
                    self.state = "missing"
                elif error.status != 404:
                    log.warning("informer failed", extra={"informer": self.spec.name, "status": error.status, "retry_s": delay_s})
                delay_s = self._back_off(delay_s)
            except Exception as error:
                if not self._stop.is_set():
                    log.warning("informer failed", extra={"informer": self.spec.name, "error": str(error)[:300]})
                delay_s = self._back_off(delay_s)

    def _back_off(self, delay_s: float) -> float:
        self._stop.wait(delay_s)
        return min(MAX_BACKOFF_S, delay_s * 2)

    def _list(self) -> str:
        """A paginated listing; returns its resourceVersion. A page's ``continue`` token that
        expired (410) restarts the listing, as client-go's pager does."""
        items: list[dict[str, Any]] = []
        query = self.spec.query() | {"limit": str(PAGE_SIZE)}
        while True:
            page = self._source_or_fail().list(self.spec.path, query)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            query = query | {"continue": str(metadata["continue"])}
        self.replace(items)
        return str(metadata.get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        query = self.spec.query() | {
            "watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }  # fmt: skip
        stream = self._stream = self._source_or_fail().watch(self.spec.path, query)
        try:
            for event in stream:
                kind, item = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(status=int(item.get("code", 500)), reason=str(item.get("message", "")))
                version = str((item.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    self.apply(str(kind), item)
                if self._stop.is_set():
                    break
        finally:
            self._stream = None
            stream.close()
        return version

    def _source_or_fail(self) -> Source:
        if self._source is None:
            raise RuntimeError(f"informer {self.spec.name} has no source")
        return self._source


class Informers:
    """A set of informers by name, started and stopped together."""

    def __init__(self, informers: Iterable[Informer]) -> None:
        self.by_name = {informer.spec.name: informer for informer in informers}

    def __getitem__(self, name: str) -> Informer:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def start(self) -> None:
        for informer in self.by_name.values():
            informer.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        for informer in self.by_name.values():
            informer.stop()
        deadline = time.monotonic() + timeout_s
        for informer in self.by_name.values():
            informer.join(max(0.0, deadline - time.monotonic()))

    @property
    def settled(self) -> bool:
        """Every informer has its first answer: work may start."""
        return all(informer.settled for informer in self.by_name.values())

    def problem(self) -> str | None:
        """None when every informer is synced (an optional one may be missing); else which are not."""
        waiting = sorted(name for name, informer in self.by_name.items() if informer.state == "waiting")
        missing = sorted(
            name for name, informer in self.by_name.items() if informer.state == "missing" and not informer.spec.optional
        )
        parts = [f"waiting for the first listing of {', '.join(waiting)}"] if waiting else []
        parts += [f"not served by the API server (CRD or API not installed): {', '.join(missing)}"] if missing else []
        return "; ".join(parts) or None


def _key(item: Mapping[str, Any]) -> Key:
    metadata = item.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


# -- the API server through the kubernetes client ----------------------------------------------


class ApiSource:
    """``Source`` over a kubernetes ``ApiClient``: plain GETs, so every resource (CRDs included)
    goes one way, and watch lines are read as they come, however the chunks fall."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    def list(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        response = self._get(path, query, timeout_s=60.0)
        try:
            listing: dict[str, Any] = json.loads(response.data)
            return listing
        finally:
            response.release_conn()

    def watch(self, path: str, query: Mapping[str, str]) -> Stream:
        # A read timeout beyond the server's own: a connection that died silently (a partition) is
        # noticed and the watch resumes, instead of waiting on a socket for ever.
        return _HttpStream(self._get(path, query, timeout_s=WATCH_TIMEOUT_S + 60.0))

    def _get(self, path: str, query: Mapping[str, str], timeout_s: float) -> Any:
        url_path = f"{path}?{urllib.parse.urlencode(dict(query))}" if query else path
        method, url, headers, _, _ = self._api.param_serialize("GET", url_path, auth_settings=["BearerToken"])
        headers = dict(headers or {}) | {"Accept": "application/json"}
        response = self._api.call_api(method, url, header_params=headers, _request_timeout=(10.0, timeout_s)).response
        if response.status >= 400:
            body = response.data
            response.release_conn()
            raise ApiException(status=response.status, reason=body.decode(errors="replace")[:300] if body else "")
        return response


class _HttpStream:
    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending = b""
        for chunk in self._response.stream(amt=None, decode_content=False):
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if pending.strip():
            yield json.loads(pending)

    def close(self) -> None:
        # shutdown() interrupts a read blocked in another thread; close() alone would wait for it.
        for end in (getattr(self._response, "shutdown", None), self._response.release_conn):
            if end is not None:
                try:
                    end()
                except Exception as error:  # the connection may be gone already
                    log.debug("closing a watch", extra={"error": str(error)})


# -- the fake, for tests ----------------------------------------------------------------------


class FakeSource:
    """``Source`` from memory: ``objects`` per path, listed in pages; ``events`` per path, batches
    handed out by the open watch of that path as they are queued (after each batch the watch ends,
    as a server's timeout ends it); ``errors`` per path, raised by the next list or watch; every
    call recorded in ``calls``."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.events: dict[str, list[list[dict[str, Any]]]] = {}
        self.errors: dict[str, list[int]] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.version = 1

    def list(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        self.calls.append(("list", path, dict(query)))
        self._fail(path)
        found = self.objects.get(path, [])
        start, limit = int(query.get("continue") or 0), int(query.get("limit") or len(found) or 1)
        more = start + limit < len(found)
        metadata = {"resourceVersion": str(self.version)} | ({"continue": str(start + limit)} if more else {})
        return {"items": found[start : start + limit], "metadata": metadata}

    def watch(self, path: str, query: Mapping[str, str]) -> Stream:
        self.calls.append(("watch", path, dict(query)))
        self._fail(path)
        return _FakeStream(self.events.setdefault(path, []))

    def _fail(self, path: str) -> None:
        errors = self.errors.get(path) or []
        if errors:
            raise ApiException(status=errors.pop(0))


class _FakeStream:
    def __init__(self, queued: list[list[dict[str, Any]]]) -> None:
        self._queued, self._closed = queued, threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self._closed.is_set():  # a quiet watch until a batch is queued, or it is closed
            if self._queued:
                yield from self._queued.pop(0)
                return
            self._closed.wait(0.01)

    def close(self) -> None:
        self._closed.set()
