"""The list-and-watch informer against a fake source: pages, selectors, relists, missing resources, stop."""

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from egpu_operator.informers import ApiSource, FakeSource, Informer, Informers, Spec

PATH = "/api/v1/pods"


def pod(name: str, version: str = "1", node: str = "n0") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "resourceVersion": version}, "spec": {"nodeName": node}}


def slim(item: dict[str, Any]) -> Any:
    return {"node": item["spec"]["nodeName"]} if item["spec"].get("nodeName") else None


SPEC = Spec("pods", PATH, slim, label_selector="app=x", field_selector="status.phase!=Failed",
            indexes={"node": lambda view: (view["node"],)})  # fmt: skip


def until(done: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s} s: {what}")
        time.sleep(0.01)


@pytest.fixture
def running() -> Iterator[Callable[[FakeSource], Informer]]:
    started: list[Informer] = []

    def start(source: FakeSource) -> Informer:
        informer = Informer(SPEC, source)
        informer.first_backoff_s = 0.01
        informer.start()
        started.append(informer)
        return informer

    yield start
    for informer in started:
        informer.stop()
        assert informer.join(5.0), "an informer thread outlived its stop"


def test_lists_in_pages_then_watches_from_the_listing_with_the_selectors(running: Callable[[FakeSource], Informer]) -> None:
    source = FakeSource()
    source.objects[PATH] = [pod(f"p{number}") for number in range(1201)]
    source.version = 77
    informer = running(source)
    until(lambda: any(call[0] == "watch" for call in source.calls), "the watch starts")
    lists = [query for kind, _, query in source.calls if kind == "list"]
    assert [query.get("continue") for query in lists] == [None, "500", "1000"]
    assert {(query["limit"], query["labelSelector"], query["fieldSelector"]) for query in lists} == {
        ("500", "app=x", "status.phase!=Failed")
    }
    watch = next(query for kind, _, query in source.calls if kind == "watch")
    assert (watch["resourceVersion"], watch["allowWatchBookmarks"], watch["labelSelector"]) == ("77", "true", "app=x")
    assert informer.state == "synced"
    assert len(informer.items()) == 1201


def test_watch_events_reach_the_store_and_bookmarks_move_the_version(running: Callable[[FakeSource], Informer]) -> None:
    source = FakeSource()
    informer = running(source)
    until(lambda: any(call[0] == "watch" for call in source.calls), "the watch starts")
    source.events[PATH].append(
        [
            {"type": "ADDED", "object": pod("a", version="2")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        ]
    )
    until(lambda: len([call for call in source.calls if call[0] == "watch"]) == 2, "the watch resumes")
    assert informer.get(("ml", "a")) == {"node": "n0"}
    assert source.calls[-1][2]["resourceVersion"] == "9"


def test_watch_events_change_the_store_and_its_index_and_call_the_handler_on_changes_only() -> None:
    changes: list[tuple[Any, Any, Any]] = []
    informer = Informer(SPEC, on_change=lambda key, old, new: changes.append((key, old, new)))
    informer.replace([pod("a")])
    informer.apply("MODIFIED", pod("a", version="2"))  # the slim view is the same: no change
    informer.apply("MODIFIED", pod("a", node="n1"))
    informer.apply("ADDED", pod("b", node=""))  # transformed to None: not kept
    assert changes == [(("ml", "a"), None, {"node": "n0"}), (("ml", "a"), {"node": "n0"}, {"node": "n1"})]
    assert (informer.by("node", "n0"), informer.by("node", "n1")) == ([], [{"node": "n1"}])
    informer.apply("DELETED", pod("a", node="n1"))
    assert (informer.items(), informer.grouped("node")) == ({}, {})
    assert changes[-1] == (("ml", "a"), {"node": "n1"}, None)


def test_an_expired_version_relists_and_reports_what_changed_meanwhile(running: Callable[[FakeSource], Informer]) -> None:
    source = FakeSource()
    source.objects[PATH] = [pod("a"), pod("b")]
    informer = Informer(SPEC, source)
    informer.first_backoff_s = 0.01
    gaps: list[bool] = []
    informer.on_gap = lambda: gaps.append(True)
    seen: list[tuple[Any, Any]] = []
    informer.on_change = lambda key, old, new: seen.append((key, new))
    informer.start()
    until(lambda: informer.state == "synced", "the first listing")
    source.objects[PATH] = [pod("b")]  # a deleted while the watch was broken
    source.events[PATH].append([{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}])
    until(lambda: informer.relists == 1, "a relist after 410")
    informer.stop()
    assert informer.join(5.0)
    assert (("ml", "a"), None) in seen
    assert gaps == [True]
    assert list(informer.items()) == [("ml", "b")]


def test_a_resource_not_served_is_missing_until_it_appears(running: Callable[[FakeSource], Informer]) -> None:
    source = FakeSource()
    source.errors[PATH] = [404] * 3
    informer = running(source)
    group = Informers([informer])
    until(lambda: informer.state != "waiting", "an answer")
    assert informer.state == "missing"
    assert informer.settled
    assert group.problem() == "not served by the API server (CRD or API not installed): pods"
    source.objects[PATH] = [pod("a")]
    until(lambda: informer.state == "synced", "the resource appears")
    assert group.problem() is None
    assert informer.get(("ml", "a")) == {"node": "n0"}


def test_missing_is_a_readiness_problem_unless_optional() -> None:
    required, optional = Informer(SPEC), Informer(Spec("slices", "/apis/x/v1/slices", slim, optional=True))
    required.state, optional.state = "missing", "missing"
    group = Informers([required, optional])
    assert group.settled
    assert group.problem() == "not served by the API server (CRD or API not installed): pods"
    required.state = "waiting"
    assert group.problem() == "waiting for the first listing of pods"


def test_other_errors_back_off_and_retry(running: Callable[[FakeSource], Informer]) -> None:
    source = FakeSource()
    source.errors[PATH] = [500, 403]
    source.objects[PATH] = [pod("a")]
    informer = running(source)
    until(lambda: informer.state == "synced", "synced after the errors")
    assert [kind for kind, _, _ in source.calls[:3]] == ["list", "list", "list"]


class Streaming(http.server.BaseHTTPRequestHandler):
    """An API server whose watches stay open and silent: a read blocks until the client shuts it."""

    def do_GET(self) -> None:
        if "watch=true" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            time.sleep(30)
            return
        body = json.dumps({"items": [pod("a")], "metadata": {"resourceVersion": "5"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_stop_ends_a_thread_blocked_reading_a_real_watch() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Streaming)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
        informer = Informer(SPEC, ApiSource(client.ApiClient(configuration)))
        informer.start()
        until(lambda: informer._stream is not None, "the watch is open")
        time.sleep(0.2)  # let the thread block in the read
        informer.stop()
        assert informer.join(5.0), "stop left the thread blocked in the watch"
        assert informer.get(("ml", "a")) == {"node": "n0"}
    finally:
        server.shutdown()
        server.server_close()
