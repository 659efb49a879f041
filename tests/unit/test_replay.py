"""`pycontain replay`: a recorded audit log judged by another policy, offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pycontain.cli.replay import ReplayError, format_replay, replay
from pycontain.core.policy import builtin_policy, load_policy_text

LOG = [
    {"ts": 1.0, "agent": "a", "kind": "agent-start", "pid": None, "cgroup": "/x"},
    {"ts": 1.1, "agent": "a", "kind": "exec",
     "pid": 10, "filename": "/usr/bin/python3", "argv": ["python3", "train.py"], "verdict": "allow"},
    {"ts": 1.2, "agent": "a", "kind": "connect",
     "pid": 10, "protocol": "tcp", "daddr": "198.51.100.2", "dport": 443, "verdict": "allow"},
    {"ts": 1.3, "agent": "a", "kind": "exec",
     "pid": 11, "filename": "/tmp/xmrig", "argv": ["xmrig"], "verdict": "deny", "rule": "exec.deny[0]"},
    {"ts": 1.4, "agent": "a", "kind": "connect",
     "pid": 10, "protocol": "tcp", "daddr": "198.51.100.2", "dport": 3333, "verdict": "allow"},
    {"ts": 1.5, "agent": "a", "kind": "exec",
     "pid": 12, "filename": "/usr/bin/ssh", "argv": ["ssh", "-NfR", "2222:localhost:22", "h"], "verdict": "allow"},
    {"ts": 1.6, "agent": "a", "kind": "violation", "pid": 11, "rule": "exec.deny[0]", "action": "deny", "reason": "x"},
]


@pytest.fixture
def audit(tmp_path):
    p = tmp_path / "audit.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in LOG) + "\n")
    return p


def test_default_policy_verdicts(audit):
    res = {(r.line, r.kind): r for r in replay(str(audit), builtin_policy("default"))}
    assert len(res) == 5                                   # lifecycle/violation lines skipped
    assert res[(2, "exec")].decision == "allow"
    assert res[(3, "connect")].decision == "allow"
    assert res[(4, "exec")].decision == "deny" and res[(4, "exec")].rule == "exec.deny:xmrig"
    assert res[(5, "connect")].decision == "deny" and res[(5, "connect")].changed   # pool port: recorded allow
    ssh = res[(6, "exec")]
    assert ssh.decision == "kill-process" and ssh.rule.startswith("exec.deny_program_args") and ssh.changed


def test_strict_policy_denies_unlisted_egress(audit):
    res = replay(str(audit), builtin_policy("strict"))
    https = next(r for r in res if r.kind == "connect" and r.what.startswith("198.51.100.2:443"))
    assert https.decision == "deny" and https.rule == "network.default"


def test_permissive_policy_shows_what_would_no_longer_be_stopped(audit):
    res = replay(str(audit), load_policy_text("name: lax\n"))
    miner = next(r for r in res if r.line == 4)
    assert miner.decision == "allow" and miner.changed
    text = format_replay(res)
    assert "decided differently" in text and "\x1b" not in text
    lines = [json.loads(l) for l in format_replay(res, json=True).splitlines()]
    assert {l["line"] for l in lines} == {2, 3, 4, 5, 6}


def test_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(LOG[1]) + "\n{not json\n")
    with pytest.raises(ReplayError, match=r"bad.jsonl:2: not an audit record") as e:
        replay(str(p), builtin_policy("default"))
    assert e.value.exit_code == 2
    r = subprocess.run([sys.executable, "-m", "pycontain.cli", "replay", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr and "Traceback" not in r.stderr


def test_ssh_remote_command_with_R_is_not_a_tunnel(tmp_path):
    p = tmp_path / "a.jsonl"
    recs = [{"ts": 1.0, "agent": "a", "kind": "exec", "pid": 20, "filename": "/usr/bin/ssh",
             "argv": ["ssh", "host", "grep", "-R", "x", "/"], "verdict": "allow"},
            {"ts": 1.1, "agent": "a", "kind": "exec", "pid": 21, "filename": "/usr/bin/ssh",
             "argv": ["ssh", "host", "-R", "2222:localhost:22"], "verdict": "allow"}]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    res = replay(str(p), builtin_policy("default"))
    assert [r.decision for r in res] == ["allow", "kill-process"]


def _log(tmp_path, recs):
    p = tmp_path / "n.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return str(p)


def test_port_limits_of_allowed_addresses_are_judged_like_user_space(tmp_path):
    """Under default: deny the port limit of an allowed address is the kernel's
    (issue 12: address+port rules in the kernel), and replay applies it the same way."""
    p = load_policy_text("network:\n  default: deny\n  allow: [{cidr: 198.51.100.0/24, ports: [443]}]\n")
    recs = [{"ts": 1.0, "agent": "a", "kind": "connect", "pid": 5, "protocol": "tcp", "daddr": "198.51.100.7",
             "dport": p_, "verdict": "allow"} for p_ in (443, 22)]
    recs.append({"ts": 1.2, "agent": "a", "kind": "send", "pid": 5, "protocol": "udp", "daddr": "2001:db8::1",
                 "dport": 53, "verdict": "allow"})
    res = replay(_log(tmp_path, recs), p)
    assert [(r.decision, r.rule) for r in res] == [("allow", None), ("deny", "network.default"),
                                                   ("deny", "network.default")]


def test_host_rules_match_through_the_given_resolution(tmp_path):
    p = load_policy_text("network:\n  deny: [{host: pool.example.test}]\n")
    recs = [{"ts": 1.0, "agent": "a", "kind": "connect", "pid": 5, "protocol": "tcp", "daddr": "198.51.100.9",
             "dport": 443, "verdict": "allow"}]
    assert replay(_log(tmp_path, recs), p)[0].decision == "allow"        # unresolved: nothing to match
    res = replay(_log(tmp_path, recs), p, resolved={"pool.example.test": ["198.51.100.9"]})
    assert (res[0].decision, res[0].rule) == ("deny", "network.deny:pool.example.test")



IDENTITY_LOG = [
    # a link named "notes" to a miner: the name used is innocent, the file that ran is not
    {"ts": 2.0, "agent": "a", "kind": "exec", "pid": 20, "filename": "/tmp/notes", "argv": ["notes"],
     "real_path": "/opt/x/xmrig", "exe": {"name": "xmrig", "dev": 1, "ino": 2, "nlink": 1, "uid": 0,
                                          "mode": 0o100755, "mtime": 0}, "verdict": "allow"},
    # ld.so ./xmrig: the loader's executable mapping of the miner
    {"ts": 2.1, "agent": "a", "kind": "exec_map", "pid": 21, "prot": 5, "fd": 3,
     "exe": {"name": "xmrig", "dev": 1, "ino": 2, "nlink": 1, "uid": 0, "mode": 0o100755, "mtime": 0},
     "verdict": "allow"},
    # a memfd
    {"ts": 2.2, "agent": "a", "kind": "exec", "pid": 22, "filename": "/dev/fd/3", "argv": ["x"], "fileless": True,
     "exe": {"name": "memfd:x", "dev": 1, "ino": 3, "nlink": 0, "uid": 0, "mode": 0o100777, "mtime": 0},
     "verdict": "allow"},
]


def test_exec_records_are_judged_on_the_file_that_ran(tmp_path):
    p = tmp_path / "ids.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in IDENTITY_LOG) + "\n")
    res = {r.line: r for r in replay(str(p), builtin_policy("default"))}
    assert len(res) == 3
    assert res[1].decision == "deny" and res[1].rule == "exec.deny:xmrig" and res[1].changed
    assert res[2].kind == "exec_map" and res[2].decision == "deny" and res[2].rule == "exec.deny:xmrig"
    assert res[3].decision == "deny" and res[3].rule == "exec.fileless"
    lax = {r.line: r for r in replay(str(p), load_policy_text("name: lax\nexec:\n  fileless: alert\n"))}
    assert [lax[i].decision for i in (1, 2, 3)] == ["allow", "allow", "allow"]
