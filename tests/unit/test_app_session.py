"""The wiring hub (app/session.py, app/controller.py) with fake edges: no BPF,
no cgroups, no NVML, no root. The fake probes keep the real ring-buffer
callback (Probes._on_record) so its error accounting is the real one."""

from __future__ import annotations

import ctypes
import io
import json
import subprocess
import sys

import pytest
from prometheus_client import generate_latest

from pycontain.app import controller as controller_mod
from pycontain.app.edges import Clock, Edges
from pycontain.app.session import Session
from pycontain.core import engine as engine_mod
from pycontain.core.decisions import Action
from pycontain.core.events import DecodeError, EventType, ExecEvent, Header, Mode, NetEvent, StratumEvent, Verdict
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.kernel import loader
from pycontain.kernel.loader import Probes
from pycontain.observe.audit import AuditLog
from pycontain.observe.metrics import make_registry

AGENT_ID = 1      # the first agent a controller adds
DEFAULT = builtin_policy("default")


def header(etype, pid=100, verdict=Verdict.ALLOW, rule_id=0, agent_id=AGENT_ID):
    return Header(type=etype, verdict=verdict, flags=0, rule_id=rule_id, pid=pid, tid=pid, ppid=1, uid=0,
                  agent_id=agent_id, ts_ns=5000, start_ns=1000, cgroup_id=1, comm=b"x")


def exec_event(filename: bytes, argv, **kw) -> ExecEvent:
    return ExecEvent(h=header(EventType.EXEC, **kw), filename=filename, argv=tuple(argv), argc=len(argv))


def connect_event(daddr: str, dport: int, **kw) -> NetEvent:
    return NetEvent(h=header(EventType.CONNECT, **kw), family=2, protocol=6, daddr=daddr, dport=dport,
                    saddr="", sport=0)


TUNNEL = (b"/usr/bin/ssh", [b"ssh", b"-R", b"1:h:2", b"h"])    # default policy: kill-process in user space
GARBAGE = b"not a record"


class FakeProbes(Probes):
    """Real Probes bookkeeping and callback; records come from a queue."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.queue: list = []
        self.tables: list = []
        self.tracked: dict[str, int] = {}
        self.polling = False
        self.closed = False

    def push(self, item) -> None:
        self.queue.append(item)

    def load(self):
        pass

    def set_tables(self, tables):
        self.tables.append(tables)

    def track_cgroup(self, path, agent_id):
        self.tracked[path] = agent_id

    def untrack_cgroup(self, path):
        self.tracked.pop(path, None)

    def hook_status(self):
        return {"exec": "attached"}

    def lost_kernel(self):
        return 0

    def close(self):
        self.closed = True

    def poll(self, timeout_ms=100):
        items, self.queue = self.queue, []
        self.polling = True
        try:
            for item in items:
                raw = GARBAGE if item is GARBAGE else str(id(item)).encode()
                _RECORDS[raw] = item
                buf = ctypes.create_string_buffer(raw, len(raw))
                self._on_record(None, buf, len(raw))
        finally:
            self.polling = False
        return len(items)


_RECORDS: dict[bytes, object] = {}


def _decode(raw: bytes):
    if raw == GARBAGE:
        raise DecodeError("short record")
    return _RECORDS[raw]


class FakeActuator:
    def __init__(self, probes_ref):
        self.probes_ref = probes_ref
        self.applied: list = []       # (decision, applied while the ring was being polled)
        self.fail_on: set = set()

    def apply(self, d):
        self.applied.append((d, self.probes_ref["p"].polling))
        if d.action in self.fail_on:
            raise RuntimeError("actuator bug")
        return "done"

    def close(self):
        pass


class FakeCgroup:
    def __init__(self, path):
        self.v2_path = path
        self.v1_paths: dict = {}
        self.budgets = None

    def set_budgets(self, **kw):
        self.budgets = kw

    def sample(self):
        raise OSError("no cgroup files in a unit test")


class FakeClock(Clock):
    def __init__(self):
        self.t = 100.0
        super().__init__(monotonic=lambda: self.t, wall=lambda: 1_000_000.0 + self.t, boot_offset=lambda: 0.0)


class FakeServer:
    def __init__(self, state, path, handlers=None):
        self.path, self.handlers, self.started, self.closed = path, handlers, False, False

    def start(self):
        self.started = True

    def close(self):
        self.closed = True


class FakeMetrics:
    def __init__(self, port, state, addr):
        self.port, self.addr, self.stopped = port, addr, False

    def shutdown(self):
        self.stopped = True


@pytest.fixture(autouse=True)
def fake_decode(monkeypatch):
    monkeypatch.setattr(loader, "decode", _decode)


@pytest.fixture
def rig():
    ref: dict = {}
    clock = FakeClock()
    actuator = FakeActuator(ref)

    def probes(**kw):
        ref["p"] = FakeProbes(**kw)
        return ref["p"]

    edges = Edges(probes=probes, actuator=lambda cgroups, **_: actuator, nvml=None, lookup=lambda host: [],
                  state_server=FakeServer,
                  metrics_server=lambda port, state, addr: (FakeMetrics(port, state, addr), None),
                  clock=clock)
    out = io.StringIO()

    def make(policy=DEFAULT, **kw) -> Session:
        s = Session(policy, audit=AuditLog(stream=out), edges=edges, **kw)
        s.start()
        return s

    class Rig:
        pass
    r = Rig()
    r.make, r.clock, r.actuator, r.ref = make, clock, actuator, ref
    r.records = lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    return r


def started(rig, policy=DEFAULT, **kw):
    s = rig.make(policy, **kw)
    s.ctl.add_agent("trainer", FakeCgroup("/sys/fs/cgroup/trainer"))
    return s, rig.ref["p"]


def test_event_in_gives_an_audit_record_and_state_counters(rig):
    s, p = started(rig)
    assert p.tracked == {"/sys/fs/cgroup/trainer": AGENT_ID}
    p.push(exec_event(b"/usr/bin/python3", [b"python3", b"train.py"]))
    p.push(connect_event("198.51.100.7", 443))
    s.step(0)
    recs = [r for r in rig.records() if r["kind"] in ("exec", "connect")]
    assert [(r["agent"], r["kind"]) for r in recs] == [("trainer", "exec"), ("trainer", "connect")]
    assert s.state.events_total[("trainer", "exec")] == 1
    assert s.state.events_total[("trainer", "connect")] == 1
    assert [c["daddr"] for c in s.state.agents["trainer"].connections] == ["198.51.100.7"]
    assert s.state.policy_name == "default" and s.state.probes == {"exec": "attached"}
    assert rig.actuator.applied == []


def test_decisions_are_applied_after_the_poll_not_in_the_callback(rig):
    s, p = started(rig)
    p.push(exec_event(*TUNNEL, pid=77))
    s.step(0)
    assert [(d.action, d.pid, polling) for d, polling in rig.actuator.applied] == [(Action.KILL_PROCESS, 77, False)]
    kinds = [(r["kind"], r.get("rule")) for r in rig.records() if r["kind"] in ("exec", "violation", "action")]
    assert kinds == [("exec", None), ("violation", "exec.deny_program_args:ssh -R*"),
                     ("action", "exec.deny_program_args:ssh -R*")]
    assert s.state.violations_total[("trainer", "exec.deny_program_args:ssh -R*")] == 1
    assert s.state.actions_total[("trainer", "kill-process")] == 1


def test_reload_compiles_the_policy_once_and_swaps_it(rig, monkeypatch):
    calls = []
    real = controller_mod.compile_policy

    def counting(policy, resolved=None):
        calls.append(policy.name)
        return real(policy, resolved)
    monkeypatch.setattr(controller_mod, "compile_policy", counting)
    monkeypatch.setattr(engine_mod, "compile_policy", counting)
    s, p = started(rig)
    assert calls == ["default"]
    lax = load_policy_text("name: lax\nmode: monitor\n")
    s.ctl.reload(lax)
    assert calls == ["default", "lax"]
    assert s.ctl.engine.policy is lax and s.ctl.policy is lax
    assert s.ctl.rules == p.tables[-1].rules and p.tables[-1].mode == Mode.MONITOR
    assert (s.state.policy_name, s.state.mode) == ("lax", "monitor")
    assert rig.records()[-1]["kind"] == "policy-reload"


def test_manual_kill_freeze_thaw_handlers(rig):
    s, _p = started(rig)
    s.serve(socket_path="/run/x.sock", metrics_port=9464, metrics_addr="0.0.0.0",
            handlers={"adopt": lambda body: {"ok": True}})
    assert set(s.server.handlers) == {"kill", "freeze", "thaw", "adopt"} and s.server.started
    assert (s.metrics.port, s.metrics.addr) == (9464, "0.0.0.0")
    h = s.handlers()
    assert h["freeze"]("trainer") == {"ok": True, "agent": "trainer", "action": "freeze"}
    assert s.state.agents["trainer"].frozen
    assert h["thaw"]("trainer")["ok"] and not s.state.agents["trainer"].frozen
    assert h["kill"]("trainer")["ok"]
    assert h["kill"]("nobody") == {"ok": False, "error": "no agent 'nobody'"}
    assert [(d.action, d.rule) for d, _ in rig.actuator.applied] == [
        (Action.FREEZE, "manual"), (Action.THAW, "manual"), (Action.KILL, "manual")]
    assert s.state.actions_total[("trainer", "kill")] == 1
    server, metrics = s.server, s.metrics
    s.close()
    assert server.closed and metrics.stopped


def test_handler_errors_are_counted_apart_from_decode_errors(rig, monkeypatch):
    s, p = started(rig)
    real = s.ctl.engine.on_event

    def engine_bug(ev, now):
        if ev.h.pid == 13:
            raise RuntimeError("engine bug")
        return real(ev, now)
    monkeypatch.setattr(s.ctl.engine, "on_event", engine_bug)
    rig.actuator.fail_on = {Action.KILL_PROCESS}
    p.push(GARBAGE)                                          # decode error
    p.push(exec_event(b"/usr/bin/true", [b"true"], pid=13))  # the handler raises
    p.push(exec_event(*TUNNEL, pid=14))                      # its decision fails after the poll
    p.push(exec_event(b"/usr/bin/true", [b"true"], pid=15))
    rig.clock.t += 5                                         # losses are published once a second
    s.step(0)
    assert (p.decode_errors, p.handler_errors, p.user_lost) == (1, 1, 2)
    assert s.ctl.handler_errors == 1
    assert (s.state.lost_user, s.state.handler_errors) == (1, 2)
    assert s.state.events_total[("trainer", "exec")] == 3
    text = generate_latest(make_registry(s.state)).decode()
    assert 'pycontain_events_lost_total{where="userspace"} 1.0' in text
    assert 'pycontain_events_lost_total{where="handler"} 2.0' in text


def test_trace_session_only_observes(rig):
    seen = []
    s = rig.make(None, report=seen.append, trace_all=True)
    p = rig.ref["p"]
    assert p.trace_all and s.ctl.engine is None and s.ctl.actuator is None
    assert len(p.tables) == 1 and p.tables[0].mode == Mode.MONITOR and not p.tables[0].rules
    cg = FakeCgroup("/sys/fs/cgroup/job")
    s.ctl.add_agent("job", cg, apply_budgets=False)
    p.push(exec_event(*TUNNEL))                               # would be killed under a policy
    p.push(exec_event(b"/bin/ls", [b"ls"], agent_id=0))       # a host process (--all)
    s.step(0)
    assert [(r["agent"], r["kind"]) for r in seen] == [("job", "exec"), ("host", "exec")]
    assert rig.actuator.applied == [] and cg.budgets is None


def test_the_app_layer_imports_without_bcc():
    code = ("import sys; import pycontain.app.session, pycontain.app.runner, pycontain.app.daemon; "
            "assert 'bcc' not in sys.modules, 'bcc imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_slow_action_does_not_delay_draining(rig):
    """A whole-agent kill that waits (cgroup emptying, NVML) runs on the
    action worker: while it is stuck, later records are still drained,
    recorded and judged, and a one-process kill still happens at once."""
    import threading
    release, entered = threading.Event(), threading.Event()
    fast = rig.actuator.apply

    def slow_apply(d):
        if d.action == Action.KILL:
            entered.set()
            assert release.wait(10), "never released"
        return fast(d)
    rig.actuator.apply = slow_apply
    s, p = started(rig)
    p.push(StratumEvent(h=header(EventType.STRATUM, verdict=Verdict.DENY, pid=21), family=2, protocol=6,
                        daddr="198.51.100.1", dport=443, saddr="", sport=0,
                        payload=b'{"id":1,"method":"mining.subscribe"}'))  # -> kill the agent (slow)
    s.step(0)
    assert entered.wait(5)
    p.push(exec_event(b"/usr/bin/true", [b"true"], pid=22))
    p.push(exec_event(*TUNNEL, pid=23))                                     # ssh -R: kill-process rule
    s.step(0)                                                               # returns while the kill waits
    assert [r["pid"] for r in rig.records() if r["kind"] == "exec"] == [22, 23]
    assert [(d.action, d.pid) for d, _ in rig.actuator.applied] == [(Action.KILL_PROCESS, 23)]
    release.set()
    assert s.ctl.worker.wait_idle(5)
    assert [d.action for d, _ in rig.actuator.applied] == [Action.KILL_PROCESS, Action.KILL]
    assert s.state.actions_total[("trainer", "kill")] == 1
    s.close()
