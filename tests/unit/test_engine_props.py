"""Properties of the engine over arbitrary inputs (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import AGENT_ID, header

from pycontain.core.decisions import Action, Breach
from pycontain.core.engine import Engine
from pycontain.core.events import EventType, ExecEvent, ExitEvent, ForkEvent, NetEvent, StratumEvent, Verdict
from pycontain.core.policy import builtin_policy, load_policy_text

LADDER_POLICY = load_policy_text("actions:\n  gpu_util: {ladder: [alert, throttle, freeze, kill], grace: 5s}\n")
ORDER = [Action.ALERT, Action.THROTTLE, Action.FREEZE, Action.KILL]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 20), st.booleans()), max_size=60))
def test_ladder_never_skips_never_goes_back_and_needs_a_breach(steps):
    """Through the engine: GPU breaches reported (or not) at random times,
    ticks in between. While the breach persists the ladder only climbs, one
    step per grace; it resets only after the breach was silent long enough."""
    e = Engine(LADDER_POLICY)
    hold = e.escalator.clear_after_s
    br = Breach("a", "gpu.sm_util", "gpu_util", "hot")
    now, level, last_step, last_seen = 0.0, -1, 0.0, None
    for dt, breaching in steps:
        now += dt
        # the tick comes first: it may clear a breach silent for `hold` seconds
        out = e.tick(now)
        if breaching:
            out += e.on_breaches([br], now)
        for d in out:
            assert d.agent == "a" and d.rule == "gpu.sm_util"
            if d.action == Action.THAW:
                assert level >= 1, "thaw without a throttle or freeze"
                assert last_seen is not None and now - last_seen >= hold - 1e-9, "cleared while persisting"
                level = -1
                continue
            idx = ORDER.index(d.action)
            persisting = breaching or (last_seen is not None and now - last_seen < hold)
            assert persisting, "escalation without a breach"
            if idx == 0 and level >= 0:
                # a silent reset after an alert (nothing to undo)
                assert level == 0 and now - last_seen >= hold - 1e-9
            else:
                assert idx == level + 1, f"{ORDER[level] if level >= 0 else None} -> {d.action}"
            if idx > 0:
                assert now - last_step >= 5 - 1e-9, "stepped up within the grace"
            level, last_step = idx, now
        if breaching:
            if level == -1:
                raise AssertionError("a breach produced no decision at all")
            last_seen = now
        elif last_seen is not None and now - last_seen >= hold and level == 0:
            level = -1                                    # an alert-only breach resets silently


_kinds = st.sampled_from(["exec", "fork", "exit", "connect", "stratum"])
_bytes = st.binary(max_size=40)
_event = st.builds(
    lambda kind, pid, start, verdict, rule, agent_id, fname, argv, addr, port, child, ts: {
        "exec": lambda: ExecEvent(h=header(EventType.EXEC, pid=pid, start_ns=start, verdict=verdict, rule_id=rule,
                                           agent_id=agent_id, ts_ns=ts),
                                  filename=fname, argv=tuple(argv), argc=len(argv)),
        "fork": lambda: ForkEvent(h=header(EventType.FORK, pid=pid, start_ns=start, agent_id=agent_id, ts_ns=ts),
                                  child_pid=child),
        "exit": lambda: ExitEvent(h=header(EventType.EXIT, pid=pid, start_ns=start, agent_id=agent_id), exit_code=0),
        "connect": lambda: NetEvent(h=header(EventType.CONNECT, pid=pid, start_ns=start, verdict=verdict, rule_id=rule,
                                             agent_id=agent_id, ts_ns=ts), family=2, protocol=6, daddr=addr,
                                    dport=port, saddr="", sport=0),
        "stratum": lambda: StratumEvent(h=header(EventType.STRATUM, pid=pid, verdict=verdict, rule_id=rule,
                                                 agent_id=agent_id), family=2, protocol=6, daddr=addr, dport=port,
                                        saddr="", sport=0, payload=fname),
    }[kind](),
    _kinds, st.integers(1, 8), st.integers(0, 5), st.sampled_from(list(Verdict)), st.integers(0, 80),
    st.sampled_from([AGENT_ID, AGENT_ID, 99]), _bytes, st.lists(_bytes, max_size=5),
    st.sampled_from(["127.0.0.1", "198.51.100.3", "not-an-ip", "2001:db8::1", ""]), st.integers(0, 65535),
    st.integers(1, 8), st.integers(0, 10**6))


@settings(max_examples=200, deadline=None)
@given(st.lists(_event, max_size=40), st.sampled_from(["default", "strict"]), st.booleans())
def test_arbitrary_event_streams_never_raise_and_monitor_never_enforces(events, name, monitor):
    policy = builtin_policy(name)
    if monitor:
        policy = dataclasses.replace(policy, mode="monitor")
    e = Engine(policy)
    e.add_agent(AGENT_ID, "a")
    for i, ev in enumerate(events):
        for d in e.on_event(ev, float(i)) + e.tick(float(i)):
            assert d.agent == "a"
            if monitor:
                assert d.monitor
            if d.pid is not None and d.action == Action.KILL_PROCESS:
                assert d.start_ns is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["exec", "exit", "connect"]), st.integers(1, 3), st.integers(1, 4)),
                max_size=40))
def test_reused_pids_never_mix(ops):
    """A process record is only ever the one with that (pid, start_ns): a new
    incarnation never sees the previous one's exec or connects."""
    e = Engine(builtin_policy("default"))
    e.add_agent(AGENT_ID, "a")
    truth: dict[int, tuple[int, bytes, bool]] = {}
    for op, pid, start in ops:
        if op == "exec":
            fname = f"/bin/p{pid}-{start}".encode()
            prev = truth.get(pid)
            e.on_event(ExecEvent(h=header(EventType.EXEC, pid=pid, start_ns=start, ppid=0), filename=fname,
                                 argv=(fname,), argc=1), 0.0)
            inherited = prev[2] if prev is not None and prev[0] == start else False
            truth[pid] = (start, fname, inherited)
        elif op == "exit" and pid in truth:
            e.on_event(ExitEvent(h=header(EventType.EXIT, pid=pid, start_ns=truth[pid][0]), exit_code=0), 0.0)
            del truth[pid]
        elif op == "connect" and pid in truth:
            e.on_event(NetEvent(h=header(EventType.CONNECT, pid=pid, start_ns=0, ts_ns=1), family=2, protocol=6,
                                daddr="198.51.100.9", dport=3333, saddr="", sport=0), 0.0)
            s, f, _ = truth[pid]
            truth[pid] = (s, f, True)
        for p, (s, f, connected) in truth.items():
            info = e.processes.lookup(p)
            assert info is not None and info.start_ns == s and info.filename == f
            assert (info.unapproved_connect_ns is not None) == connected
