import ctypes
import json

from pycontain.core.decisions import Action, Decision
from pycontain.core.event_types import decode
from pycontain.core.events import CExec, CNet, EventType, Flag, Verdict
from pycontain.core.records import decision_records, event_record
from pycontain.observe.audit import AuditLog


def _exec_bytes(argv: list[bytes], filename=b"/usr/bin/xmrig", verdict=Verdict.DENY, rule=3):
    c = CExec()
    c.h.type = EventType.EXEC
    c.h.verdict = verdict
    c.h.flags = Flag.KILLED
    c.h.rule_id = rule
    c.h.pid, c.h.ppid, c.h.start_ns, c.h.comm = 42, 1, 99, b"sh"
    args = b"\0".join(argv) + b"\0"
    ctypes.memmove(ctypes.addressof(c) + CExec.args.offset, args, len(args))  # keeps the NULs
    c.args_len = len(args)
    c.argc = len(argv)
    c.filename = filename
    c.filename_len = len(filename)
    return bytes(c)


def test_exec_record_escapes_and_names_rule():
    ev = decode(_exec_bytes([b"xmrig", b"\x1b[31mred", b"bad\xff"]))
    rec = event_record(ev, "a1", 1000.0, {3: "exec.deny[0]"})
    assert rec["kind"] == "exec" and rec["agent"] == "a1" and rec["pid"] == 42 and rec["ts"] == 1000.0
    assert rec["verdict"] == "deny" and rec["rule"] == "exec.deny[0]" and rec["killed"] is True
    assert rec["argv"] == ["xmrig", "\\x1b[31mred", "bad\\xff"]
    assert rec["filename"] == "/usr/bin/xmrig"


def test_connect_record():
    c = CNet()
    c.h.type = EventType.CONNECT
    c.h.verdict = Verdict.DENY
    c.h.pid = 7
    c.family, c.protocol, c.dport = 2, 6, 3333
    c.daddr[:4] = [198, 51, 100, 2]
    rec = event_record(decode(bytes(c)), "a", 1.0)
    assert (rec["protocol"], rec["daddr"], rec["dport"], rec["verdict"]) == ("tcp", "198.51.100.2", 3333, "deny")


def test_decision_records_have_required_fields():
    d = Decision(agent="a", rule="exec.deny[0]", action=Action.KILL_PROCESS, reason="miner", pid=5, start_ns=9)
    v, a = decision_records(d, 2.0, "done")
    for r in (v, a):
        assert {"ts", "agent", "kind", "pid"} <= r.keys()
    assert v["kind"] == "violation" and v["rule"] == "exec.deny[0]" and v["action"] == "kill-process"
    assert a["kind"] == "action" and a["result"] == "done"


def test_audit_log_is_jsonl_ascii_and_private(tmp_path):
    p = tmp_path / "audit.jsonl"
    log = AuditLog(str(p))
    log.write({"ts": 1, "agent": "a", "kind": "exec", "pid": 1, "argv": ["\x1b[2J", "é"]})
    log.write({"ts": 2, "agent": "a", "kind": "violation", "pid": 1, "rule": "r", "action": "kill"})
    log.close()
    raw = p.read_bytes()
    assert b"\x1b" not in raw and all(b < 128 for b in raw)
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    assert lines[0]["argv"] == ["\x1b[2J", "é"] and lines[1]["rule"] == "r"
    assert (p.stat().st_mode & 0o777) == 0o600


def test_line_encoder_writes_what_the_json_encoder_writes():
    """The audit line encoder (one C encoder built once) must give the bytes
    JSONEncoder.encode gives, for every kind of value a record holds."""
    from pycontain.observe import audit
    rec = {"ts": 1722.123456, "agent": "trainer", "pid": 7, "neg": -3, "big": 2**63 + 1, "none": None,
           "yes": True, "no": False, "text": "caf\u00e9 \u202e\x1b[31m\\", "argv": ["a", "b c"],
           "exe": {"name": "x", "mode": 0o755}, "inf": float("inf"), "raw": b"\xff", "tags": ("t1", "t2")}
    assert audit._ENCODE_LINE(rec) == audit._ENCODE(rec)
    assert audit._ENCODE_LINE({}) == "{}"


def _routine_line_cases():
    from hypothesis import strategies as st

    from pycontain.core.events import (
        ExecEvent,
        ExeIdentity,
        ExitEvent,
        ForkEvent,
        Header,
        NetEvent,
        StratumEvent,
        TcpStateEvent,
    )
    u8, u16, u32, u64 = (st.integers(0, 2**b - 1) for b in (8, 16, 32, 64))
    kinds = [EventType.FORK, EventType.EXIT, EventType.EXEC, EventType.CONNECT, EventType.SEND,
             EventType.TCP_STATE, EventType.STRATUM]
    flags = st.lists(st.sampled_from([1 << b for b in range(16)]), max_size=4).map(sum)
    header = st.builds(Header, type=st.sampled_from(kinds), verdict=st.sampled_from(list(Verdict)), flags=flags,
                       rule_id=st.sampled_from([0, 0, 5]), pid=u32, tid=u32, ppid=u32, uid=u32, agent_id=u32,
                       ts_ns=u64, start_ns=u64, cgroup_id=u64, comm=st.binary(max_size=16))
    text = st.binary(max_size=40) | st.sampled_from([b"python3", b"-c", b"caf\xc3\xa9", b"\x1b[2J", b"a\\b"])
    exe = st.builds(ExeIdentity, name=text, dev=u32, ino=st.sampled_from([0, 0, 7]), nlink=u32, uid=u32,
                    mode=u32, mtime_sec=u64) | st.just(ExeIdentity())
    addr = st.sampled_from(["127.0.0.1", "198.51.100.7", "2001:db8::1", ""])

    def event(h, n, argv, fname, ex, real, full, a1, a2, p1, p2, proto):
        if h.type == EventType.FORK:
            return ForkEvent(h=h, child_pid=n & 0xFFFFFFFF)
        if h.type == EventType.EXIT:
            return ExitEvent(h=h, exit_code=n)
        if h.type == EventType.EXEC:
            return ExecEvent(h=h, filename=fname, argv=tuple(argv), argc=len(argv) + (n & 1), exe=ex,
                             real_path=real, full_argv=full)
        if h.type == EventType.TCP_STATE:
            return TcpStateEvent(h=h, family=2, oldstate=n & 15, newstate=p1 & 15, saddr=a1, sport=p1,
                                 daddr=a2, dport=p2)
        cls = StratumEvent if h.type == EventType.STRATUM else NetEvent
        return cls(h=h, family=2, protocol=proto, daddr=a1, dport=p1, saddr=a2, sport=p2)
    return st.builds(event, header, st.integers(-2**31, 2**31 - 1), st.lists(text, max_size=70), text, exe,
                     st.sampled_from([b"", b"", b"/usr/bin/python3.11"]), st.booleans(), addr, addr, u16, u16,
                     st.sampled_from([6, 17, 1, 132]))


def test_routine_lines_are_the_general_lines():
    """Routine records (allowed, no rule nor kill) are written straight from
    the event (records.routine_line + AuditLog.line_tail): byte for byte
    what event_record and AuditLog.write give, for any header, comm, argv,
    file identity, address, agent name and orchestrator identity, twice
    (the second time from the per-value caches); a connect's entry in the
    state API is the one the general path keeps. Anything else (a verdict,
    a held exec, a stratum record) is left to the general path."""
    import io

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pycontain.core.events import FLAG_HELD, ExecEvent, NetEvent
    from pycontain.core.records import connection_entry, routine_connection, routine_line
    paths = st.sampled_from(["/sys/fs/cgroup/a", "/kubepods/burstable/pod0123abcd-0000-1111-2222-333344445555/x",
                             "/slurm/uid_1000/job_42/step_0"])

    @settings(max_examples=600, deadline=None)
    @given(_routine_line_cases(), st.text(max_size=12), st.floats(0, 4e9), paths)
    def check(ev, agent, ts, path):
        fast, slow = io.StringIO(), io.StringIO()
        a, b = AuditLog(stream=fast, host="n\u00f6de-1"), AuditLog(stream=slow, host="n\u00f6de-1")
        for log in (a, b):
            log.set_agent(agent, path)
        line = routine_line(ev, agent, ts, a.line_tail(agent))
        if line is None:      # the general path's own cases
            assert (ev.h.verdict != Verdict.ALLOW or ev.h.rule_id or ev.h.flags & (1 << 3)
                    or ev.kind == "stratum" or (ev.kind == "exec" and ev.h.flags & FLAG_HELD))
            return
        assert routine_line(ev, agent, ts, a.line_tail(agent)) == line
        a.write_line(line)
        rec = event_record(ev, agent, ts, {})
        b.write(rec)
        assert fast.getvalue() == slow.getvalue()
        assert json.loads(fast.getvalue())["kind"] == ev.kind
        if type(ev) is NetEvent:
            assert routine_connection(ev, ts) == connection_entry(rec)
        assert type(ev) is not ExecEvent or not ev.h.flags & FLAG_HELD
    check()


def test_ts_text_is_the_repr_of_the_rounded_ts():
    """records.ts_text formats a line's ts as JSON writes round(ts, 6), for
    any float (wall-clock seconds now, small test clocks, decimals that
    round up to a new integer, values past its fixed-point range)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pycontain.core.records import ts_text
    edges = [0.0, 1e-3, 0.0009999995, 0.0010000004, 1.0, 9.9999995, 1764450000.9999996, 1764450000.1234565,
             2.0 ** 33 - 1e-6, 2.0 ** 33, 2.0 ** 33 + 0.5, 1e16, 123456789.0000005, -1.5, float("inf")]
    for x in edges:
        assert ts_text(x) == repr(round(x, 6)), x

    @settings(max_examples=3000, deadline=None)
    @given(st.floats(0, 2.0 ** 34) | st.floats(1.7e9, 1.8e9) | st.integers(0, 2**62).map(lambda n: 1.7e9 + n / 1e9)
           | st.floats(allow_nan=False))
    def check(x):
        assert ts_text(x) == repr(round(x, 6))
    check()
