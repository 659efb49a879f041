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
