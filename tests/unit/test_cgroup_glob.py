"""The birth automaton (core/cgroup_glob.py) picks exactly what the scan picks."""

from __future__ import annotations

import fnmatch
import os
import random

import pytest

from pycontain.core.cgroup_glob import BIRTH_STATES, attach_prefix, compile_selectors, matches
from pycontain.core.policy import AgentSelector

PATHS = ["a", "a/b", "a/b/c", "agents/w1", "agents/w1/sub", "agents", "x/agents/w2", "kubepods.slice/p-1.slice",
         "system.slice/agent@1.service", "system.slice/other.service", "user.slice/agent@2.service/app",
         "[x]", "ab", "a-b", "w/Agent-9", "w/agent-9", "w/agent-", "w/agent-10/x"]
GLOBS = ["agents/*", "a/b", "*agent*", "w/agent-?", "w/agent-[0-9]*", "w/agent-[!0-9]", "[x]", "a/*/c", "*", "a?b",
         "w/[Aa]gent-*"]


def scan_pick(globs, rel):
    for i, g in enumerate(globs):
        if fnmatch.fnmatchcase(rel, g.strip("/")):
            return i
    return None


@pytest.mark.parametrize("glob", GLOBS)
def test_each_glob_agrees_with_fnmatch(glob):
    a = compile_selectors([AgentSelector(name="s", cgroup=glob)])
    assert a.kernel == (0,)
    for rel in PATHS:
        assert (matches(a, b"/" + rel.encode()) == 0) == fnmatch.fnmatchcase(rel, glob), (glob, rel)


def test_union_reports_the_first_selector_like_the_scan():
    sels = [AgentSelector(name=f"s{i}", cgroup=g) for i, g in enumerate(GLOBS)]
    a = compile_selectors(sels)
    assert set(a.kernel) | set(a.scan) == set(range(len(GLOBS)))
    kernel_globs = [GLOBS[i] if i in a.kernel else "\0never" for i in range(len(GLOBS))]
    for rel in PATHS:
        assert matches(a, b"/" + rel.encode()) == scan_pick(kernel_globs, rel), rel


def test_systemd_unit_matches_the_leaf():
    a = compile_selectors([AgentSelector(name="u", systemd_unit="agent@*.service")])
    for rel in PATHS:
        want = fnmatch.fnmatchcase(os.path.basename(rel), "agent@*.service")
        assert (matches(a, b"/" + rel.encode()) == 0) == want, rel


def test_commands_and_oversized_sets_stay_with_the_scan():
    rng = random.Random(7)
    many = ["*" + "".join(rng.choice("abcdefgh") for _ in range(12)) + "*" for _ in range(40)]
    sels = [AgentSelector(name="c", command="python*")] + [AgentSelector(name=f"g{i}", cgroup=g)
                                                          for i, g in enumerate(many)]
    a = compile_selectors(sels)
    assert 0 in a.scan and "command" in a.scan[0]
    assert a.kernel and len(a.rows) <= BIRTH_STATES
    assert any("states" in why for why in a.scan.values())


def test_attach_prefix_is_the_literal_parent():
    assert attach_prefix(AgentSelector(name="s", cgroup="/a/b/agent-*")) == "a/b"
    assert attach_prefix(AgentSelector(name="s", cgroup="a/*/c")) == "a"
    assert attach_prefix(AgentSelector(name="s", cgroup="solo")) == ""
    assert attach_prefix(AgentSelector(name="s", systemd_unit="x.service")) == ""
