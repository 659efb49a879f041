"""The process table's fork copy (core/processes.py forked_child)."""

from __future__ import annotations

import dataclasses

from pycontain.core.processes import MAX_ANCESTORS, ProcessInfo, ProcessTable, _child_lineage, forked_child


def test_forked_child_inherits_every_field_as_replace_would():
    """forked_child builds the child field by field (it is on the per-record
    path); every field, present and future, must come out as
    dataclasses.replace of the parent gives it."""
    parent = ProcessInfo(pid=10, start_ns=123, agent="trainer", filename=b"/usr/bin/python3",
                         argv=(b"python3", b"x.py"), ppid=3,
                         ancestors=tuple((i, b"p%d" % i) for i in range(MAX_ANCESTORS)), exec_ts_ns=99,
                         unapproved_connect_ns=77, lineage=((3, 5), (1, 0)))
    assert all(getattr(parent, f.name) != f.default for f in dataclasses.fields(ProcessInfo)
               if f.default is not dataclasses.MISSING), "give every field a non-default value"
    want = dataclasses.replace(parent, pid=11, start_ns=456, ppid=10,
                               ancestors=((10, b"/usr/bin/python3"),) + parent.ancestors[:MAX_ANCESTORS - 1],
                               lineage=_child_lineage(parent))
    assert forked_child(parent, 11, 456) == want


def test_fork_of_an_unknown_parent_and_of_a_known_one():
    t = ProcessTable()
    t.on_fork(5, 6, 1000, "trainer")             # parent never seen
    assert t.lookup(6) == ProcessInfo(pid=6, start_ns=1000, agent="trainer", ppid=5, lineage=((5, 0),))
    t.on_exec(6, 1001, "trainer", 5, b"/bin/sh", (b"sh",), 1001)
    t.on_fork(6, 7, 2000, "other")               # the agent is the parent's
    child = t.lookup(7)
    assert child is not None and (child.agent, child.filename, child.ppid) == ("trainer", b"/bin/sh", 6)
    assert child.lineage[0] == (6, 1001) and child.ancestors[0] == (6, b"/bin/sh")
