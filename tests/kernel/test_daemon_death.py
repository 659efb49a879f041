"""Fail closed when the node daemon dies (SIGKILL, OOM kill, crash): the
agents it started lose what contained them (their policy lived in its
memory; the next daemon retires its programs), so they are ended, as a
clean stop ends them. Agents it only adopted keep their pinned enforcement
and run on.

Checked from outside: the started agent's process is gone within seconds
(its pid is dead or a zombie, its cgroup removed); the adopted one lives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from pycontain.kernel.pins import release_all
from pycontain.observe.state_api import StateClient, daemon_answers
from tests.kernel.conftest import pin_root_for
from tests.kernel.procs import alive as _alive
from tests.kernel.procs import children as _children
from tests.kernel.test_daemon import PYCONTAIN, agent_dir, wait_for  # noqa: F401 (fixture)


class Node:
    """Daemons on one socket and one pin root, all killed and released at the end."""

    def __init__(self, tmp: Path):
        self.sock, self.audit = tmp / "pc.sock", tmp / "audit.jsonl"
        self.env = dict(os.environ, PYCONTAIN_BPFFS=pin_root_for(uuid.uuid4().hex[:8]))
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        d = subprocess.Popen(PYCONTAIN + ["daemon", "--allow-no-gpu", "--socket", str(self.sock), "--audit-log",
                                          str(self.audit), "--scan-interval", "0.3"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        self.procs.append(d)
        assert wait_for(lambda: daemon_answers(str(self.sock)), 60), "the daemon never served its socket"
        return d

    def close(self) -> None:
        for d in self.procs:
            for w in _children(d.pid, b"pycontain.actuate.watchdog"):
                os.kill(w, signal.SIGKILL)
            if d.poll() is None:
                d.kill()
            d.communicate(timeout=20)
        release_all(self.env["PYCONTAIN_BPFFS"])


@pytest.fixture
def node(privileged, tmp_path):
    n = Node(tmp_path)
    yield n
    n.close()


def _start_agent(sock: Path, marker: str):
    from pycontain import client
    p = client.Popen(["sleep", marker], socket=str(sock), name="death", cwd="/")
    return p, p._agent.cgroup.v2_path


def _end(p) -> None:
    if p._proc.poll() is None:
        p._proc.kill()
    p._proc.wait(10)


def test_a_daemon_killed_outright_ends_the_agents_it_started_not_those_it_adopted(node, agent_dir):
    adoptee = subprocess.Popen(["bash", "-c", f"echo $$ > {agent_dir}/cgroup.procs; exec sleep 4711"])
    p = None
    try:
        daemon = node.start()
        assert wait_for(lambda: str(adoptee.pid) in (agent_dir / "cgroup.procs").read_text(), 10)
        out = StateClient(str(node.sock)).post("/v1/adopt", {"cgroup": str(agent_dir), "name": "adoptee"})
        assert out["ok"], out
        p, cg = _start_agent(node.sock, "4712")
        assert wait_for(lambda: os.path.isdir(cg) and p.pid in [int(x) for x in
                                                                 Path(cg, "cgroup.procs").read_text().split()], 10)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert wait_for(lambda: not _alive(p.pid), 5), "a started agent outlived its daemon, uncontained"
        assert p.wait(5) == -signal.SIGKILL
        assert wait_for(lambda: not os.path.exists(cg), 5), f"{cg} was left behind"
        assert adoptee.poll() is None, "an adopted agent was killed with the daemon: it belongs to its job"
    finally:
        adoptee.kill()
        adoptee.wait()
        if p is not None:
            _end(p)


def test_a_new_daemon_ends_what_a_dead_one_started_before_taking_over(node):
    """The daemon and its watchdog both killed outright (the node's OOM
    killer can take both): the agent runs on. The next daemon of the same
    socket (and home) cannot re-contain it, its policy died with the old
    one, and would retire the programs it is in: it ends it first."""
    daemon = node.start()
    p, cg = _start_agent(node.sock, "4713")
    try:
        for w in _children(daemon.pid, b"pycontain.actuate.watchdog"):
            os.kill(w, signal.SIGKILL)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert wait_for(lambda: False, 1.0) is False and _alive(p.pid)      # nothing left to end it
        node.start()
        assert wait_for(lambda: not _alive(p.pid), 10), "the new daemon left an earlier daemon's agent running"
        assert p.wait(5) == -signal.SIGKILL           # the worker sees its episode killed, no error
        assert not os.path.exists(cg)
        recs = [json.loads(x) for x in node.audit.read_text().splitlines()]
        ended = [r for r in recs if r["kind"] == "leftover-agents-ended"]
        assert ended and cg in ended[0]["cgroups"], ended
    finally:
        _end(p)
        node.procs[-1].terminate()
        out, _ = node.procs[-1].communicate(timeout=20)
    assert node.procs[-1].returncode == 0, out
