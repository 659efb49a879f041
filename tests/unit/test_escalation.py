"""The escalation ladder on its own: steps, grace, persistence, reset, thaw."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pycontain.core.decisions import Action, GpuDetail, GpuThrottle
from pycontain.core.escalation import Escalator

A, T, F, K, KP = Action.ALERT, Action.THROTTLE, Action.FREEZE, Action.KILL, Action.KILL_PROCESS
FULL = (A, T, F, K)
KEY = ("agent", "budget.cpu")


def report(esc: Escalator, now: float, *, ladder=FULL, grace=10.0, sustained=True, monitor=False, key=KEY, pid=None):
    return [d.action for d in esc.breach(key, key[0], key[1], ladder, grace, now, "over budget", pid=pid,
                                         monitor=monitor, sustained=sustained)]


def test_first_report_takes_the_first_step_at_once():
    esc = Escalator()
    assert report(esc, 0.0) == [A]
    assert esc.level(KEY) == A


def test_sustained_breach_steps_up_on_time_between_samples():
    esc = Escalator(clear_after_s=3.0)
    taken = report(esc, 0.0)
    for t in range(1, 35):
        taken += [d.action for d in esc.tick(t - 0.5)]      # ticks between samples
        taken += report(esc, float(t))
    # one step per 10 s grace, never two at once, whoever (tick or report) notices first
    assert taken == [A, T, F, K]


def test_tick_alone_never_escalates_a_silent_breach():
    esc = Escalator(clear_after_s=3.0)
    report(esc, 0.0)
    for t in (1.0, 2.0, 2.9):
        assert esc.tick(t) == []
    assert esc.tick(3.0) == []            # cleared: alert only, nothing to undo
    assert esc.level(KEY) is None
    assert report(esc, 20.0) == [A]       # a new breach starts over at the bottom


def test_cleared_throttle_or_freeze_is_thawed_once():
    esc = Escalator(clear_after_s=3.0)
    for t in range(0, 12):
        report(esc, float(t))
    assert esc.level(KEY) == T
    out = esc.clear(KEY)
    assert [(d.action, d.rule, d.agent) for d in out] == [(Action.THAW, "budget.cpu", "agent")]
    assert "throttle" in out[0].reason
    assert esc.clear(KEY) == []           # already clear: no second thaw


def test_thaw_after_kill_when_the_ladder_throttled_on_the_way():
    esc = Escalator(clear_after_s=3.0)
    for t in range(0, 40):
        report(esc, float(t))
    assert esc.level(KEY) == K
    assert [d.action for d in esc.tick(50.0)] == [Action.THAW]


def test_alert_only_ladder_clears_silently():
    esc = Escalator()
    report(esc, 0.0, ladder=(A,))
    assert esc.tick(100.0) == [] and esc.level(KEY) is None


def test_instant_violation_steps_only_when_it_repeats_after_the_grace():
    esc = Escalator(clear_after_s=3.0)
    key = ("agent", "exec.deny[2]")
    assert report(esc, 0.0, ladder=(A, K), grace=30.0, sustained=False, key=key) == [A]
    assert esc.tick(29.0) == [] and esc.tick(31.0) == []          # time alone never steps an event
    assert report(esc, 10.0, ladder=(A, K), grace=30.0, sustained=False, key=key) == []   # within grace
    assert report(esc, 35.0, ladder=(A, K), grace=30.0, sustained=False, key=key) == [K]


def test_instant_violation_is_held_for_twice_the_grace_then_resets():
    esc = Escalator(clear_after_s=3.0)
    key = ("agent", "network.deny[0]")
    report(esc, 0.0, ladder=(A, K), grace=5.0, sustained=False, key=key)
    assert esc.tick(9.9) == [] and esc.level(key) == A
    esc.tick(10.0)
    assert esc.level(key) is None
    assert report(esc, 11.0, ladder=(A, K), grace=5.0, sustained=False, key=key) == [A]


def test_monitor_flag_is_carried_to_steps_and_thaw():
    esc = Escalator(clear_after_s=3.0)
    out = esc.breach(KEY, "agent", "budget.cpu", (T, K), 1.0, 0.0, "r", monitor=True)
    assert out[0].monitor
    out = esc.tick(10.0)
    assert [(d.action, d.monitor) for d in out] == [(Action.THAW, True)]


def test_a_shorter_ladder_after_reload_keeps_the_step_in_bounds():
    esc = Escalator(clear_after_s=3.0)
    for t in range(0, 25):
        report(esc, float(t))
    assert esc.level(KEY) == F
    assert report(esc, 25.0, ladder=(A, T)) == []     # clamped to the new top, no new action
    assert esc.level(KEY) == T


def test_per_process_keys_are_independent():
    esc = Escalator()
    k1, k2 = ("agent", "gpu.program", 10), ("agent", "gpu.program", 11)
    assert report(esc, 0.0, ladder=(KP,), key=k1, pid=10) == [KP]
    assert report(esc, 0.0, ladder=(KP,), key=k2, pid=11) == [KP]


def test_forget_agent_drops_its_state_only():
    esc = Escalator()
    report(esc, 0.0)
    report(esc, 0.0, key=("other", "budget.cpu"))
    esc.forget_agent("agent")
    assert esc.level(KEY) is None and esc.level(("other", "budget.cpu")) == A


# ---- properties ---------------------------------------------------------------------------

_ops = st.lists(st.tuples(st.floats(0.0, 15.0), st.sampled_from(["report", "tick", "clear"]),
                          st.sampled_from([0, 1])), max_size=80)


@settings(max_examples=300, deadline=None)
@given(_ops, st.booleans(), st.floats(0.5, 20.0), st.sampled_from([FULL, (T, K), (A, T, KP), (F,), (A,)]))
def test_ladder_invariants(ops, sustained, grace, ladder):
    """For any interleaving of reports, ticks and clears over two keys:
    every action is the next step of that key's ladder (or its first step
    after a reset), step-ups are at least one grace apart, nothing happens to
    a key that has no live breach, and a thaw only follows a throttle or
    freeze."""
    esc = Escalator(clear_after_s=3.0)
    keys = [("agent", "r0"), ("agent", "r1")]
    level = {k: -1 for k in keys}
    last_step = {k: 0.0 for k in keys}
    now = 0.0
    for dt, op, which in ops:
        now += dt
        k = keys[which]
        if op == "report":
            out = esc.breach(k, k[0], k[1], ladder, grace, now, "r", sustained=sustained)
        elif op == "tick":
            out = esc.tick(now)
        else:
            out = esc.clear(k)
        for d in out:
            dk = (d.agent, d.rule)
            if d.action == Action.THAW:
                assert any(a in (T, F) for a in ladder[: level[dk] + 1]), "thaw without throttle/freeze"
                level[dk] = -1
                continue
            idx = ladder.index(d.action)
            if d.action == KP and idx == level[dk]:
                assert op == "report" and not sustained, "only a repeated violation is killed again"
                continue
            if level[dk] == -1:
                assert idx == 0, "a breach must start at the first step"
                assert op == "report", "a new breach needs a report"
            else:
                assert idx == level[dk] + 1, "skipped or went back"
                assert now - last_step[dk] >= grace - 1e-9, "stepped within the grace"
                assert op == "report" or sustained, "an instant violation stepped without repeating"
            level[dk], last_step[dk] = idx, now
        # silent resets (alert-only) are visible through level()
        for kk in keys:
            if esc.level(kk) is None:
                level[kk] = -1
            else:
                assert esc.level(kk) == ladder[level[kk]]


# ---- the same ladder through plain reports -----------------------------------------------

LADDER3 = (Action.ALERT, Action.THROTTLE, Action.KILL)


def breach3(e, now, key=("a", "r")):
    return [d.action for d in e.breach(key, "a", "r", LADDER3, 10.0, now, "why")]


def test_seed_steps_once_per_grace_and_stops_at_the_top():
    e = Escalator(clear_after_s=3)
    assert breach3(e, 0) == [Action.ALERT]
    assert breach3(e, 2) == [] and breach3(e, 9.9) == []
    assert breach3(e, 10) == [Action.THROTTLE]
    assert breach3(e, 12) == []
    assert breach3(e, 20) == [Action.KILL]
    assert breach3(e, 30) == [] and breach3(e, 100) == []


def test_seed_clear_thaws_only_what_can_be_undone():
    e = Escalator(clear_after_s=3)
    breach3(e, 0)
    assert e.tick(5) == []                         # an alert has nothing to undo
    breach3(e, 10)
    breach3(e, 11)
    breach3(e, 20)                                  # throttle
    ds = e.tick(22)
    assert ds == []
    ds = e.tick(23.5)
    assert [(d.action, d.rule, d.agent) for d in ds] == [(Action.THAW, "r", "a")]
    assert breach3(e, 24) == [Action.ALERT]          # reset: starts over


def test_seed_keys_are_independent_and_forget_agent():
    e = Escalator()
    assert breach3(e, 0, ("a", "r")) == [Action.ALERT]
    assert breach3(e, 0, ("b", "r")) == [Action.ALERT]
    e.forget_agent("a")
    assert breach3(e, 1, ("a", "r")) == [Action.ALERT]
    assert breach3(e, 1, ("b", "r")) == []


def test_seed_explicit_clear():
    e = Escalator()
    e.breach(("a", "r"), "a", "r", (Action.FREEZE, Action.KILL), 5, 0, "x", monitor=True)
    ds = e.clear(("a", "r"), monitor=True)
    assert [(d.action, d.monitor) for d in ds] == [(Action.THAW, True)]
    assert e.clear(("a", "r")) == []


def test_repeated_violation_at_kill_process_is_killed_again():
    esc = Escalator()
    key = ("agent", "exec.deny_program_args[0]", 10, 99)
    assert report(esc, 0.0, ladder=(KP,), sustained=False, key=key, pid=10) == [KP]
    assert report(esc, 0.1, ladder=(KP,), sustained=False, key=key, pid=10) == [KP]
    # a sustained breach at kill-process is not repeated every sample
    k2 = ("agent", "gpu.program", 11, 5)
    assert report(esc, 0.0, ladder=(KP,), key=k2, pid=11) == [KP]
    assert report(esc, 1.0, ladder=(KP,), key=k2, pid=11) == []


def test_gpu_detail_of_the_latest_report_wins_and_the_thaw_keeps_it():
    esc = Escalator(clear_after_s=3.0)
    key = ("agent", "gpu.sm_util")
    first = GpuDetail(throttle=GpuThrottle(0.25, 2.0), sm_util=90.0)
    [d] = esc.breach(key, "agent", "gpu.sm_util", (A, T), 5.0, 0.0, "hot", gpu=first)
    assert d.gpu == first
    [d] = esc.breach(key, "agent", "gpu.sm_util", (A, T), 5.0, 6.0, "hot", gpu=GpuDetail(sm_util=95.0))
    assert d.action == T and d.gpu == GpuDetail(throttle=GpuThrottle(0.25, 2.0), sm_util=95.0)
    [d] = esc.tick(10.0)
    assert d.action == Action.THAW and d.gpu.throttle == GpuThrottle(0.25, 2.0)


def test_gpu_detail_merge_keeps_what_the_newer_report_leaves_out():
    old = GpuDetail(throttle=GpuThrottle(), device=1, sm_util=50.0, memory_bytes=10)
    assert old.merged(GpuDetail()) == old
    assert old.merged(GpuDetail(device=2, memory_bytes=20)) == GpuDetail(GpuThrottle(), 2, 50.0, 20)
