"""The one escalation mechanism, on its own."""

from __future__ import annotations

from pycontain.core.decisions import Action
from pycontain.core.escalation import Escalator

LADDER = (Action.ALERT, Action.THROTTLE, Action.KILL)


def breach(e, now, key=("a", "r")):
    return [d.action for d in e.breach(key, "a", "r", LADDER, 10.0, now, "why")]


def test_steps_once_per_grace_and_stops_at_the_top():
    e = Escalator(clear_after_s=3)
    assert breach(e, 0) == [Action.ALERT]
    assert breach(e, 2) == [] and breach(e, 9.9) == []
    assert breach(e, 10) == [Action.THROTTLE]
    assert breach(e, 12) == []
    assert breach(e, 20) == [Action.KILL]
    assert breach(e, 30) == [] and breach(e, 100) == []


def test_clear_thaws_only_what_can_be_undone():
    e = Escalator(clear_after_s=3)
    breach(e, 0)
    assert e.tick(5) == []                         # an alert has nothing to undo
    breach(e, 10)
    breach(e, 11)
    breach(e, 20)                                  # throttle
    ds = e.tick(22)
    assert ds == []
    ds = e.tick(23.5)
    assert [(d.action, d.rule, d.agent) for d in ds] == [(Action.THAW, "r", "a")]
    assert breach(e, 24) == [Action.ALERT]          # reset: starts over


def test_keys_are_independent_and_forget_agent():
    e = Escalator()
    assert breach(e, 0, ("a", "r")) == [Action.ALERT]
    assert breach(e, 0, ("b", "r")) == [Action.ALERT]
    e.forget_agent("a")
    assert breach(e, 1, ("a", "r")) == [Action.ALERT]
    assert breach(e, 1, ("b", "r")) == []


def test_explicit_clear():
    e = Escalator()
    e.breach(("a", "r"), "a", "r", (Action.FREEZE, Action.KILL), 5, 0, "x", monitor=True)
    ds = e.clear(("a", "r"), monitor=True)
    assert [(d.action, d.monitor) for d in ds] == [(Action.THAW, True)]
    assert e.clear(("a", "r")) == []
