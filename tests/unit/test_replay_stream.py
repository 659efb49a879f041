"""replay streams (constant memory), judges exactly what the agent ran
(reversible escaping: no argv the agent chooses changes the verdict), and
takes the addresses host names resolved to (issue 13 part 6)."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycontain.cli.replay import iter_replay, replay
from pycontain.core.engine import Engine
from pycontain.core.event_types import EventType
from pycontain.core.events import ExecEvent, Header, Verdict
from pycontain.core.kernel_rules import compile_policy, exec_verdict
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.core.records import event_record

POLICY = builtin_policy("default")
TABLES = compile_policy(POLICY)
ENGINE = Engine(POLICY)
PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]


def _exec_record(filename: bytes, argv: list[bytes]) -> dict:
    h = Header(type=EventType.EXEC, verdict=Verdict.ALLOW, flags=0, rule_id=0, pid=5, tid=5, ppid=1, uid=0,
               agent_id=1, ts_ns=1, start_ns=1, cgroup_id=1, comm=b"x")
    return event_record(ExecEvent(h=h, filename=filename, argv=tuple(argv), argc=len(argv)), "a", 1.0)


def _truth(filename: bytes, argv: list[bytes]) -> str:
    if exec_verdict(TABLES, filename, argv):
        return "deny"
    return "kill-process" if ENGINE.user_exec_rule(filename, argv) else "allow"


words = st.sampled_from([b"xmrig", b"stratum+tcp://p:3333", b"\\", b"\\x73", b"\\\\", b"-R", b"\xff", b"\x1b[2J",
                         b"ssh", b"--donate-level", b"\\u202e", b"ok"])
args = st.lists(st.one_of(words, st.binary(max_size=12)).map(bytes), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([b"/usr/bin/ssh", b"/tmp/xmrig", b"/bin/sh", b"/tmp/a\\b", b"/tmp/\xffx"]), args)
def test_replay_judges_the_bytes_the_agent_ran(tmp_path, filename, argv):
    """Whatever argv the agent picks (backslashes, escapes of its own, bad
    UTF-8), replay of its audit record decides as the live rules did."""
    p = tmp_path / "log.jsonl"
    p.write_text(json.dumps(_exec_record(filename, argv)) + "\n")
    [r] = replay(str(p), POLICY)
    assert r.decision == _truth(filename, argv)


def _write_log(path, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            rec = {"ts": i, "agent": "a", "kind": "connect", "pid": i, "protocol": "tcp",
                   "daddr": f"198.51.100.{i % 250 + 1}", "dport": 443 + i % 3, "verdict": "allow"}
            fh.write(json.dumps(rec) + "\n")
            fh.write(json.dumps({"ts": i, "agent": "a", "kind": "exec", "pid": i, "filename": "/bin/true",
                                 "argv": ["true", str(i)], "verdict": "allow"}) + "\n")


def _peak(path) -> tuple[int, int]:
    tracemalloc.start()
    count = sum(1 for _ in iter_replay(str(path), POLICY, window=64))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return count, peak


def test_replay_memory_does_not_grow_with_the_log(tmp_path):
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _write_log(small, 500)
    _write_log(big, 2000)
    n_small, peak_small = _peak(small)
    n_big, peak_big = _peak(big)
    assert (n_small, n_big) == (1000, 4000)
    assert peak_big < 1.5 * peak_small, (peak_small, peak_big)   # a list of results would be 4x


def test_a_kill_after_the_exec_is_the_recorded_decision(tmp_path):
    p = tmp_path / "log.jsonl"
    recs = [{"ts": 1, "agent": "a", "kind": "exec", "pid": 9, "filename": "/usr/bin/ssh",
             "argv": ["ssh", "-R", "1:h:2", "h"], "verdict": "allow"},
            {"ts": 1, "agent": "a", "kind": "connect", "pid": 3, "protocol": "tcp", "daddr": "198.51.100.1",
             "dport": 443, "verdict": "allow"},
            {"ts": 2, "agent": "a", "kind": "violation", "pid": 9, "rule": "x", "action": "kill-process"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = replay(str(p), POLICY)
    assert [(r.kind, r.recorded, r.changed) for r in res] == [("exec", "kill-process", False),
                                                              ("connect", "allow", False)]


def test_cli_resolve_option_and_bad_values(tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("network:\n  deny: [{host: pool.example.test}]\n")
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"ts": 1, "agent": "a", "kind": "connect", "pid": 5, "protocol": "tcp",
                               "daddr": "198.51.100.9", "dport": 443, "verdict": "allow"}) + "\n")
    base = PYCONTAIN + ["replay", str(log), "--policy", str(pol), "--json"]
    out = subprocess.run(base, capture_output=True, text=True)
    assert json.loads(out.stdout)["decision"] == "allow"
    out = subprocess.run(base + ["--resolve", "Pool.Example.Test.=198.51.100.9,2001:db8::9"],
                         capture_output=True, text=True)
    r = json.loads(out.stdout)
    assert (r["decision"], r["rule"]) == ("deny", "network.deny:pool.example.test")
    bad = subprocess.run(base + ["--resolve", "pool.example.test=not-an-ip"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --resolve") and "Traceback" not in bad.stderr


def test_unresolved_policy_hosts_match_nothing():
    p = load_policy_text("network:\n  deny: [{host: pool.example.test}]\n")
    assert compile_policy(p).deny4 == []
