"""The state API's serving threads: bounded in a burst, never stuck behind a slow request."""

from __future__ import annotations

import socket
import threading
import time

from pycontain.observe.api_workers import Workers
from pycontain.observe.state import NodeState
from pycontain.observe.state_api import StateClient, StateServer


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_is_served_by_the_workers_only():
    seen: set[int] = set()
    done = threading.Semaphore(0)

    def serve(_item) -> None:
        seen.add(threading.get_ident())
        time.sleep(0.001)
        done.release()
    w = Workers(serve, workers=3, clock=FakeClock())      # the clock never moves: no request is late
    for i in range(40):
        w.submit(i)
    for _ in range(40):
        assert done.acquire(timeout=5)
    assert 1 <= len(seen) <= 3 and w.rescued == 0
    w.close()


def test_a_request_queued_behind_busy_workers_gets_its_own_thread():
    clock, release, served = FakeClock(), threading.Event(), threading.Event()

    def serve(item) -> None:
        if item == "slow":
            release.wait(10)
        else:
            served.set()
    w = Workers(serve, workers=1, overflow_s=0.2, clock=clock)
    w.submit("slow")
    time.sleep(0.05)                 # the one worker is inside the slow request
    w.submit("start")
    assert w.rescue() == 0 and not served.wait(0.1)      # not late yet: it waits its turn
    clock.t = 0.25
    assert w.rescue() == 1 and served.wait(5)            # late: served while the slow one still runs
    release.set()
    assert w.close() == []


def test_close_returns_what_never_started():
    block = threading.Event()
    w = Workers(lambda _i: block.wait(10), workers=1, clock=FakeClock())
    w.submit("a")
    time.sleep(0.05)
    w.submit("b")
    w.submit("c")
    assert w.close() == ["b", "c"]
    block.set()


def test_slow_handlers_and_idle_connections_do_not_block_the_api(tmp_path):
    """Five stops stuck on leftovers and five silent keep-alive connections
    (more than the API's workers) do not keep a start from being answered."""
    gate = threading.Event()
    handlers = {"stop": lambda body: gate.wait(20) and {"ok": True},
                "start": lambda body: {"ok": True, "agent": body["name"]}}
    path = str(tmp_path / "pc.sock")
    srv = StateServer(NodeState(policy_name="p", mode="enforce"), path, handlers)
    srv.start()
    idle, stops = [], []
    try:
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            idle.append(s)
        for i in range(5):
            t = threading.Thread(target=StateClient(path, timeout=30).post, args=("/v1/stop", {"name": f"s{i}"}))
            t.start()
            stops.append(t)
        assert StateClient(path, timeout=5).post("/v1/start", {"name": "ep"}) == {"ok": True, "agent": "ep"}
        assert all(t.is_alive() for t in stops)          # the stops really were still stuck
    finally:
        gate.set()
        for t in stops:
            t.join(10)
        for s in idle:
            s.close()
        srv.close()


def test_the_server_names_the_asking_process_whatever_the_body_says(tmp_path):
    import os
    seen = []
    path = str(tmp_path / "pc.sock")
    srv = StateServer(NodeState(policy_name="p", mode="enforce"), path,
                      {"start": lambda body: seen.append(body["_peer_pid"]) or {"ok": True}})
    srv.start()
    try:
        StateClient(path, timeout=5).post("/v1/start", {"name": "ep", "_peer_pid": 1})
    finally:
        srv.close()
    assert seen == [os.getpid()]          # SO_PEERCRED: a client cannot name another process
