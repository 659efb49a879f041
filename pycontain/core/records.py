"""Events and decisions as flat, JSON-ready records (pure).

One record shape serves the audit log, `pycontain trace --json` and
`pycontain replay`. Agent-supplied bytes (comm, filename, argv, payload) are
escaped and bounded with :func:`pycontain.core.text.safe_text`, so a record printed
raw to a terminal cannot carry an escape sequence, and invalid UTF-8 survives
as ``\\xNN``.
"""

from __future__ import annotations

from .decisions import Decision
from .event_types import BY_CLASS, Record, spec_of
from .events import FLAG_KILLED, Event, Verdict
from .text import safe_text

_VERDICT_TEXT: dict[int, str] = {v: v.name.lower().replace("_", "-") for v in Verdict}


def event_record(ev: Event, agent: str, ts: float, rules: dict[int, str] | None = None) -> Record:
    """Flatten one kernel event. ``ts`` is wall-clock seconds."""
    h = ev.h
    rec: Record = {
        "ts": round(ts, 6), "agent": agent, "kind": ev.kind, "pid": h.pid,
        "start_ns": h.start_ns, "tid": h.tid, "ppid": h.ppid, "uid": h.uid,
        "comm": safe_text(h.comm.split(b"\0", 1)[0], 64),
        "cgroup_id": h.cgroup_id, "verdict": _VERDICT_TEXT[h.verdict],
    }
    if h.rule_id:
        rec["rule"] = (rules or {}).get(h.rule_id, f"kernel#{h.rule_id}")
    if h.flags & FLAG_KILLED:
        rec["killed"] = True
    spec = BY_CLASS.get(type(ev)) or spec_of(ev)
    if spec is not None:
        spec.record(ev, rec)   # the type's own fields (core.event_types)
    return rec


def decision_records(d: Decision, ts: float, result: str | None = None) -> list[Record]:
    """A decision becomes a violation record and, when it acts, an action record."""
    base = {"ts": round(ts, 6), "agent": d.agent, "pid": d.pid, "rule": d.rule}
    out = [dict(base, kind="violation", action=d.action.value, reason=d.reason,
                monitor=d.monitor, **({"start_ns": d.start_ns} if d.start_ns else {}),
                **({"result": result} if result is not None else {}))]
    if result is not None:
        out.append(dict(base, kind="action", action=d.action.value, result=result, monitor=d.monitor))
    return out
