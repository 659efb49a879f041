"""Events and decisions as flat, JSON-ready records (pure).

One record shape serves the audit log, `pycontain trace --json` and
`pycontain replay`. Agent-supplied bytes (comm, filename, argv, payload) are
escaped and bounded with :func:`pycontain.text.safe_text`, so a record printed
raw to a terminal cannot carry an escape sequence, and invalid UTF-8 survives
as ``\\xNN``.
"""

from __future__ import annotations

import socket

from .text import safe_text
from .decisions import Decision
from .events import (
    Event, ExecEvent, ExitEvent, Flag, ForkEvent, NetEvent, SocketEvent,
    StratumEvent, TcpStateEvent, Verdict,
)

ARG_LIMIT = 512      # characters kept per argv entry in a record
ARGV_LIMIT = 64      # entries kept

_TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
_FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_PACKET: "packet", socket.AF_UNIX: "unix"}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 5: "seqpacket"}


def event_record(ev: Event, agent: str, ts: float, rules: dict[int, str] | None = None) -> dict:
    """Flatten one kernel event. ``ts`` is wall-clock seconds."""
    h = ev.h
    rec: dict = {
        "ts": round(ts, 6), "agent": agent, "kind": ev.kind, "pid": h.pid,
        "start_ns": h.start_ns, "tid": h.tid, "ppid": h.ppid, "uid": h.uid,
        "comm": safe_text(h.comm.split(b"\0", 1)[0], 64),
        "cgroup_id": h.cgroup_id, "verdict": Verdict(h.verdict).name.lower().replace("_", "-"),
    }
    if h.rule_id:
        rec["rule"] = (rules or {}).get(h.rule_id, f"kernel#{h.rule_id}")
    if h.flags & Flag.KILLED:
        rec["killed"] = True
    if isinstance(ev, ExecEvent):
        rec["filename"] = safe_text(ev.filename, 1024)
        rec["argv"] = [safe_text(a, ARG_LIMIT) for a in ev.argv[:ARGV_LIMIT]]
        rec["argc"] = ev.argc
        if ev.args_truncated or len(ev.argv) > ARGV_LIMIT:
            rec["argv_truncated"] = True
    elif isinstance(ev, ForkEvent):
        rec["child_pid"] = ev.child_pid
        if h.flags & Flag.THREAD:
            rec["thread"] = True
    elif isinstance(ev, ExitEvent):
        rec["exit_code"] = ev.exit_code
    elif isinstance(ev, NetEvent):
        rec.update(protocol=ev.proto_name, daddr=ev.daddr, dport=ev.dport,
                   saddr=ev.saddr, sport=ev.sport)
        if h.flags & Flag.V4_MAPPED:
            rec["v4_mapped"] = True
        if isinstance(ev, StratumEvent):
            rec["payload"] = safe_text(ev.payload, 128)
    elif isinstance(ev, SocketEvent):
        rec.update(family=_FAMILIES.get(ev.family, str(ev.family)),
                   type=_SOCK_TYPES.get(ev.sock_type & 0xF, str(ev.sock_type)), protocol=ev.protocol)
    elif isinstance(ev, TcpStateEvent):
        rec.update(daddr=ev.daddr, dport=ev.dport, saddr=ev.saddr, sport=ev.sport,
                   oldstate=_TCP_STATES.get(ev.oldstate, str(ev.oldstate)),
                   newstate=_TCP_STATES.get(ev.newstate, str(ev.newstate)))
    return rec


def decision_records(d: Decision, ts: float, result: str | None = None) -> list[dict]:
    """A decision becomes a violation record and, when it acts, an action record."""
    base = {"ts": round(ts, 6), "agent": d.agent, "pid": d.pid, "rule": d.rule}
    out = [dict(base, kind="violation", action=d.action.value, reason=d.reason,
                monitor=d.monitor, **({"start_ns": d.start_ns} if d.start_ns else {}))]
    if result is not None:
        out.append(dict(base, kind="action", action=d.action.value, result=result, monitor=d.monitor))
    return out
