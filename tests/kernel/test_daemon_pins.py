"""Enforcement outlives the daemon (issue 13 part 2): pinned BPF links keep
the kernel verdicts while the daemon is SIGKILLed or stopped, a restarted
daemon takes over with no gap, and only `daemon --release` ends it.

Checked from outside: a copy of touch(1) named like a denied program never
writes its sentinel, and a listener never accepts a connection."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import pin_root_for

from tests.kernel.test_daemon import PYCONTAIN, agent_dir, cgroup2_root, wait_for  # noqa: F401 (fixture)

POLICY = """\
name: pin-test
agents:
  - name: ptest
    cgroup: "{glob}"
exec:
  deny: [pcminer]
network:
  deny:
    - {{ports: [{port}]}}
"""

LOOP = """\
echo $$ > {cg}/cgroup.procs
while :; do
  {miner} {sentinel} 2>/dev/null
  (echo x > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected >> {log}
  sleep 0.1
done
"""


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.setblocking(False)
    yield srv
    srv.close()


def accepted(srv: socket.socket) -> int:
    n = 0
    while True:
        try:
            c, _ = srv.accept()
            c.close()
            n += 1
        except BlockingIOError:
            return n


def start_daemon(pol: Path, sock: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(PYCONTAIN + ["daemon", "--policy", str(pol), "--socket", str(sock),
                                         "--scan-interval", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def tracked(sock: Path, env: dict) -> bool:
    if not sock.exists():
        return False
    r = subprocess.run(PYCONTAIN + ["status", "--json", "--socket", str(sock)], capture_output=True, text=True,
                       env=env)
    return r.returncode == 0 and any(a["name"].startswith("ptest:") for a in json.loads(r.stdout)["agents"])


def test_sigkilled_daemon_leaves_enforcement_and_restart_takes_over(privileged, tmp_path, listener, agent_dir):
    port = listener.getsockname()[1]
    miner = tmp_path / "pcminer"
    shutil.copy(shutil.which("touch"), miner)
    sentinel, log = tmp_path / "mined", tmp_path / "loop.log"
    pin_root = pin_root_for(uuid.uuid4().hex[:8])
    env = dict(os.environ, PYCONTAIN_BPFFS=pin_root)
    rel = os.path.relpath(agent_dir, cgroup2_root())
    pol, sock = tmp_path / "policy.yaml", tmp_path / "pc.sock"
    pol.write_text(POLICY.format(glob=rel, port=port))

    # without pycontain the agent mines and connects
    loop = subprocess.Popen(["bash", "-c", LOOP.format(cg=agent_dir, miner=miner, sentinel=sentinel,
                                                       port=port, log=log)])
    daemons = []
    try:
        assert wait_for(lambda: sentinel.exists() and accepted(listener) > 0, 10), "the attack must work unguarded"
        daemons.append(start_daemon(pol, sock, env))
        assert wait_for(lambda: tracked(sock, env), 40), "daemon never tracked the agent"
        time.sleep(0.5)
        sentinel.unlink()
        accepted(listener)

        daemons[0].send_signal(signal.SIGKILL)
        daemons[0].wait(10)
        time.sleep(2.0)     # ~20 tries of each while no daemon runs
        assert loop.poll() is None
        assert not sentinel.exists(), "a denied program ran while the daemon was dead"
        assert accepted(listener) == 0, "a denied connect got through while the daemon was dead"
        assert len(os.listdir(pin_root)) == 1

        # a restarted daemon takes over and retires the old generation
        daemons.append(start_daemon(pol, sock, env))
        assert wait_for(lambda: tracked(sock, env), 40)
        assert wait_for(lambda: len(os.listdir(pin_root)) == 1, 10), os.listdir(pin_root)
        # systemctl stop (SIGTERM) does not free the agents either
        daemons[1].terminate()
        assert daemons[1].wait(20) == 0
        time.sleep(1.0)
        assert not sentinel.exists() and accepted(listener) == 0

        # only an explicit release ends enforcement
        r = subprocess.run(PYCONTAIN + ["daemon", "--release", "--socket", str(sock)], capture_output=True,
                           text=True, env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["released"], r.stderr
        assert not os.path.exists(pin_root)
        assert wait_for(lambda: sentinel.exists() and accepted(listener) > 0, 10)
    finally:
        loop.kill()
        for d in daemons:
            if d.poll() is None:
                d.kill()
            d.wait(10)
        subprocess.run(PYCONTAIN + ["daemon", "--release", "--socket", str(sock)], env=env, capture_output=True)
