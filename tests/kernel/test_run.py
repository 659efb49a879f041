"""`pycontain run` end to end: real probes, real cgroups, outcomes checked from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
# the agents run scripts from pytest's root-only tmp_path: these tests are about teardown and the miner
AS_ROOT = ["run", "--user", "root"]
ROOT_RUN = PYCONTAIN + AS_ROOT



def run(args, timeout=60, **kw):
    return subprocess.run(PYCONTAIN + args, capture_output=True, text=True, timeout=timeout, **kw)


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def miner_script(dirpath: Path, sentinel: Path, name: str = "xmrig") -> Path:
    p = dirpath / name
    p.write_text(f"#!/bin/sh\ntouch {sentinel}\n")
    p.chmod(0o755)
    return p


def test_exit_status_is_the_agents(privileged):
    assert run(["run", "--", "sh", "-c", "exit 7"]).returncode == 7
    assert run(["run", "--", "sh", "-c", "kill -TERM $$"]).returncode == 128 + signal.SIGTERM


def test_command_not_found_is_127(privileged):
    r = run(["run", "--", "/nonexistent/agent-binary"])
    assert r.returncode == 127
    assert "command not found" in r.stderr and "Traceback" not in r.stderr


def test_invalid_policy_is_exit_2_with_file_line_key(privileged, tmp_path):
    pol = tmp_path / "bad.yaml"
    pol.write_text("name: x\nbudgets:\n  cpu: 2\n  memroy: 1GiB\n")
    r = run(["run", "--policy", str(pol), "--", "true"])
    assert r.returncode == 2
    assert f"{pol}:4" in r.stderr and "budgets.memroy" in r.stderr and "Traceback" not in r.stderr


def test_miner_never_runs_but_the_same_program_outside_does(privileged, tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    miner = miner_script(tmp_path, inside)
    audit = tmp_path / "audit.jsonl"
    # the agent's own command line is innocent; the miner is started from a script
    script = tmp_path / "agent.sh"
    script.write_text(f"#!/bin/sh\n{miner} -o stratum+tcp://198.51.100.7:3333\necho status=$?\n")
    script.chmod(0o755)
    r = run([*AS_ROOT, "--name", "t-miner", "--audit-log", str(audit), "--", str(script)])
    assert r.returncode == 0, r.stderr
    assert not inside.exists(), "the denied miner ran"
    assert "status=137" in r.stdout          # the shell saw its child die of SIGKILL
    # the very same program, outside any agent, is untouched
    other = tmp_path / "elsewhere"
    other.mkdir()
    subprocess.run([str(miner_script(other, outside)), "-o", "stratum+tcp://198.51.100.7:3333"], check=True)
    assert outside.exists()
    recs = audit_records(audit)
    denied = [x for x in recs if x["kind"] == "exec" and x.get("verdict") == "deny"]
    assert denied and denied[0]["filename"].endswith("xmrig") and denied[0].get("rule")
    viol = [x for x in recs if x["kind"] == "violation"]
    assert viol and all({"ts", "agent", "kind", "pid", "rule", "action"} <= v.keys() for v in viol)
    assert all({"ts", "agent", "kind", "pid"} <= x.keys() for x in recs)
    assert "STOPPED" in r.stderr or "DENIED" in r.stderr


def test_hostile_argv_is_escaped_on_the_terminal(privileged, tmp_path):
    miner = miner_script(tmp_path, tmp_path / "s")
    r = run(["run", "--", "sh", "-c", f"{miner} '\x1b[2J\x1b]0;pwned\x07' stratum+tcp://x; true"])
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert "\\x1b[2J" in r.stderr


def _agent_cgroup(audit: Path) -> str:
    starts = [x for x in audit_records(audit) if x["kind"] == "agent-start"]
    assert starts, "no agent-start record"
    return starts[0]["cgroup"]


def test_teardown_kills_double_forked_daemons_and_removes_cgroups(privileged, tmp_path):
    audit = tmp_path / "audit.jsonl"
    pidfile = tmp_path / "daemon.pid"
    # the agent double-forks a daemon that outlives it, then exits
    agent = f"(setsid sh -c 'echo $$ > {pidfile}; exec sleep 1000' &) ; sleep 0.5; exit 0"
    r = run([*AS_ROOT, "--name", "t-teardown", "--audit-log", str(audit), "--", "sh", "-c", agent])
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not os.path.exists(_agent_cgroup(audit))


def test_fail_closed_when_pycontain_is_sigkilled(privileged, tmp_path):
    audit = tmp_path / "audit.jsonl"
    pidfile = tmp_path / "agent.pid"
    p = subprocess.Popen(ROOT_RUN + ["--name", "t-failclosed", "--audit-log", str(audit), "--",
                                      "sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):                    # up to 60 s: the load is slow on a busy VM
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    agent_pid = int(pidfile.read_text())
    assert Path(f"/proc/{agent_pid}").exists()
    p.kill()
    p.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and Path(f"/proc/{agent_pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{agent_pid}").exists(), "agent survived pycontain's death"


def test_mining_pool_port_refused_and_listener_accepts_nothing(privileged, tmp_path):
    from pycontain.demo.testhost import TestHost
    with TestHost(prefix="trun") as host:
        lst = host.tcp_listener(3333)
        ok = host.tcp_listener(8080)
        code = ("import socket,errno,sys\n"
                "def c(p):\n"
                "    s=socket.socket(); s.settimeout(3)\n"
                "    try: s.connect((sys.argv[1],p)); return 'ok'\n"
                "    except OSError as e: return errno.errorcode.get(e.errno,str(e))\n"
                "print(c(3333), c(8080))\n")
        r = run(["run", "--", sys.executable, "-c", code, host.peer_ip4])
        time.sleep(0.3)
        assert r.stdout.split() == ["EPERM", "ok"], r.stderr
        assert lst.accepted == 0
        assert ok.accepted == 1
