"""`pycontain daemon`: discovery by selector, enforcement, SIGHUP reload, emergency stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]


def cgroup2_root() -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.startswith("cgroup2 "):
            return left.split()[4]
    pytest.fail("no cgroup2 mount")


POLICY = """\
name: daemon-test
mode: enforce
agents:
  - name: dtest
    cgroup: "{glob}"
network:
  default: allow
  local_services: any      # the test's listener stands for a remote service: this test is about reloads
  deny:
{deny}
"""


def wait_for(pred, timeout=8.0, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def agent_dir():
    root = cgroup2_root()
    d = Path(root) / f"pc-daemon-test-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    for _ in range(50):
        try:
            for p in (d / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            d.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def connect_in(cgdir: Path, port: int) -> str:
    code = ("import os,socket,errno,sys\n"
            f"open('{cgdir}/cgroup.procs','w').write(str(os.getpid()))\n"
            "s=socket.socket(); s.settimeout(2)\n"
            f"try:\n s.connect(('127.0.0.1',{port})); print('ok')\n"
            "except OSError as e: print(errno.errorcode.get(e.errno, e))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20).stdout.strip()


def test_daemon_contains_selected_cgroup_and_reloads(privileged, tmp_path, listener, agent_dir):
    rel = os.path.relpath(agent_dir, cgroup2_root())
    pol = tmp_path / "policy.yaml"
    pol.write_text(POLICY.format(glob=rel, deny=f"    - {{ports: [{listener}]}}"))
    sock = tmp_path / "pc.sock"
    audit = tmp_path / "audit.jsonl"
    d = subprocess.Popen(PYCONTAIN + ["daemon", "--policy", str(pol), "--socket", str(sock),
                                      "--audit-log", str(audit), "--scan-interval", "0.3"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def agent_known():
            if not sock.exists():
                return False
            r = subprocess.run(PYCONTAIN + ["status", "--json", "--socket", str(sock)], capture_output=True, text=True)
            agents = json.loads(r.stdout)["agents"] if r.returncode == 0 else []
            return any(a["name"] == f"dtest:{agent_dir.name}" for a in agents)
        assert wait_for(agent_known, 30), "daemon never picked up the agent cgroup"
        assert connect_in(agent_dir, listener) == "EPERM"

        # an invalid policy is rejected; the old one stays in force
        pol.write_text("name: broken\nnetwork:\n  default: sometimes\n")
        d.send_signal(signal.SIGHUP)
        assert wait_for(lambda: audit.exists() and "policy-reload-rejected" in audit.read_text())
        assert connect_in(agent_dir, listener) == "EPERM"

        # a valid one without the deny takes effect
        pol.write_text(POLICY.format(glob=rel, deny="    - {ports: [3333]}"))
        d.send_signal(signal.SIGHUP)
        assert wait_for(lambda: '"kind":"policy-reload"' in audit.read_text())
        assert connect_in(agent_dir, listener) == "ok"

        # emergency stop
        sleeper = subprocess.Popen(["sh", "-c", f"echo $$ > {agent_dir}/cgroup.procs; exec sleep 1000"])
        time.sleep(0.3)
        r = subprocess.run(PYCONTAIN + ["kill", f"dtest:{agent_dir.name}", "--socket", str(sock)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert sleeper.wait(5) == -signal.SIGKILL
    finally:
        d.terminate()
        out, _ = d.communicate(timeout=20)
    assert d.returncode == 0, out
