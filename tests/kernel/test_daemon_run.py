"""`pycontain run` through the node daemon (issue 14 part 1): no per-agent
compile, same containment, exit status relayed, nothing left behind.

The attacks (a denied miner run by the agent; an episode of a root rollout
worker writing a root-owned file and killing a root process) first work
without pycontain, then fail when the agent is started through the daemon;
checked from outside: the sentinel the miner would write is never written,
the file keeps its content, the process lives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pycontain.app.agent_client import DaemonAgent
from tests.kernel.conftest import pin_root_for
from tests.kernel.procs import children

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
MINER = "sleep 0.2; echo ran > {sentinel}"


def wait_for(pred, timeout=30.0, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


@pytest.fixture(scope="module")
def node_daemon(privileged, tmp_path_factory):
    d = tmp_path_factory.mktemp("daemon")
    sock, audit = d / "pc.sock", d / "audit.jsonl"
    proc = subprocess.Popen(PYCONTAIN + ["daemon", "--allow-no-gpu", "--socket", str(sock),
                                         "--audit-log", str(audit), "--scan-interval", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: sock.exists()), "the daemon never served its socket"
    yield sock, audit
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


@pytest.fixture
def open_dir(privileged):
    """A directory every uid may enter and write: an agent runs as a fresh
    uid of its own, so what it runs and writes must be reachable by one
    (pytest's tmp_path is root's alone, where a sentinel would never be
    written whatever pycontain did)."""
    d = tempfile.mkdtemp(prefix="pc-drun-", dir="/tmp")
    os.chmod(d, 0o777)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def dynamic_uid(uid: int) -> bool:
    return 61184 <= uid <= 65519


def run(sock, *args, **kw):
    return subprocess.run(PYCONTAIN + ["run", "--daemon-socket", str(sock), *args], capture_output=True,
                          text=True, timeout=60, **kw)


def test_run_through_daemon_contains_relays_status_and_cleans_up(node_daemon, tmp_path):
    sock, audit = node_daemon
    miner = tmp_path / "xmrig"
    shutil.copy("/bin/sh", miner)
    bare = tmp_path / "bare"
    subprocess.run([str(miner), "-c", MINER.format(sentinel=bare)], check=True)
    assert bare.read_text() == "ran\n"                     # the attack works without pycontain

    sentinel = tmp_path / "contained"
    r = run(sock, "--user", "root", "--label", "episode=17", "--label", "task=\x1b[31mred", "--",
            "sh", "-c", f'{miner} -c "{MINER.format(sentinel=sentinel)}"; grep ^0:: /proc/self/cgroup; exit 7')
    assert r.returncode == 7, r.stderr
    assert "loading this run's own probes" not in r.stderr    # the daemon started it
    cg = r.stdout.strip().split("::", 1)[1]
    time.sleep(0.5)
    assert not sentinel.exists()
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    start = [x for x in recs if x["kind"] == "agent-start" and x.get("cgroup", "").endswith(cg)]
    assert start and start[0]["labels"]["episode"] == "17" and "\x1b" not in start[0]["labels"]["task"]
    assert any(x["kind"] == "violation" and "xmrig" in x.get("reason", "") for x in recs)
    from pycontain.actuate.cgroups import detect_layout
    assert not os.path.exists(detect_layout().unified + cg), "the agent cgroup was left behind"



def _children(ppid: int, cmdline: bytes) -> list[int]:
    """Live children of `ppid` whose command line starts with `cmdline`."""
    return children(ppid, cmdline, prefix=True)


def test_signal_relayed_to_agent(node_daemon):
    sock, _ = node_daemon
    p = subprocess.Popen(PYCONTAIN + ["run", "--daemon-socket", str(sock), "--", "sleep", "30"],
                         stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: _children(p.pid, b"sleep\x0030"), timeout=30), "the agent never started"
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 128 + signal.SIGTERM


def test_client_killed_after_start_leaves_no_cgroup(node_daemon):
    sock, _ = node_daemon
    agent = DaemonAgent(str(sock), name="orphan")
    cg = agent.start()
    proc = agent.launch(["sleep", "0.5"])
    agent.name = None        # the client "dies": it never says stop
    proc.wait(5)
    assert wait_for(lambda: not os.path.exists(cg.v2_path), 10), "the daemon kept an empty orphan cgroup"


def test_client_api_popen_and_contained_block(node_daemon, open_dir):
    from pycontain import client
    sock, audit = node_daemon
    p = client.Popen(["sh", "-c", "grep ^0:: /proc/self/cgroup"], socket=str(sock), name="ep",
                     labels={"episode": 3}, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0 and "pycontain-ep" in out
    miner = open_dir / "xmrig"
    shutil.copy("/bin/sh", miner)
    sentinel = open_dir / "s"
    bare = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(miner), "-c",
                           MINER.format(sentinel=open_dir / "bare")])
    assert bare.returncode == 0 and (open_dir / "bare").exists()   # an unprivileged miner writes it unguarded
    with client.contained(name="ep", labels={"episode": 4}, socket=str(sock)) as agent:
        bg = agent.Popen(["sleep", "30"])
        r = agent.run([str(miner), "-c", MINER.format(sentinel=sentinel)])
        assert r.returncode == -signal.SIGKILL
        cg = agent.cgroup
    assert bg.wait(5) == -signal.SIGKILL           # leaving the block ended what was left
    assert not sentinel.exists() and not os.path.exists(cg)
    labels = [json.loads(x).get("labels") for x in audit.read_text().splitlines() if '"agent-start"' in x]
    assert {"episode": "3"} in labels and {"episode": "4"} in labels


def test_popen_many_contains_each_episode_in_its_own_agent_all_or_none(node_daemon, tmp_path, open_dir):
    """One request makes the agents; each process is contained from its first
    instruction (the miner is killed, its sentinel never written); a launch
    that fails ends the batch: nothing keeps running, no agent is left."""
    from pycontain import client
    from pycontain.core.errors import CommandNotFound
    from pycontain.observe.state_api import StateClient
    sock, audit = node_daemon
    miner = open_dir / "xmrig"
    shutil.copy("/bin/sh", miner)
    bare = open_dir / "bare"
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(miner), "-c",
                    MINER.format(sentinel=bare)], check=True)
    assert bare.exists()                             # the miner works without pycontain
    sentinel = open_dir / "s"
    ps = client.popen_many([["sh", "-c", "grep ^0:: /proc/self/cgroup"]] * 2
                           + [[str(miner), "-c", MINER.format(sentinel=sentinel)]],
                           socket=str(sock), name="batch", labels=[{"episode": i} for i in range(3)],
                           stdout=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=10)[0].strip() for p in ps]
    assert [p.returncode for p in ps[:2]] == [0, 0] and ps[2].returncode == -signal.SIGKILL
    assert len({outs[0], outs[1]}) == 2 and all("pycontain-batch" in o for o in outs[:2])
    assert not sentinel.exists()
    labels = [json.loads(x).get("labels") for x in audit.read_text().splitlines() if '"agent-start"' in x]
    assert {"episode": "0"} in labels and {"episode": "2"} in labels

    def batch_agents():
        return [a["name"] for a in StateClient(str(sock)).state()["agents"] if a["name"].startswith("fail")]
    with pytest.raises(CommandNotFound):
        client.popen_many([["sleep", "30"], [str(tmp_path / "no-such-program")]], socket=str(sock), name="fail")
    assert wait_for(lambda: not batch_agents(), 10), batch_agents()
    assert subprocess.run(["pgrep", "-f", "^sleep 30$"], capture_output=True).returncode == 1


def test_started_agents_share_the_daemons_v1_home_and_join_only_budget_hierarchies(node_daemon):
    """Hybrid hosts: an agent's v1 cpu, memory and pids cgroups are
    <the daemon's own v1 cgroup>/<home>/<agent>, so the daemon's agents are
    one CPU peer of it and stay inside the memory cgroup it was given; a
    separately mounted cpuacct or freezer is not joined (cgroup2 serves)."""
    from pycontain import client
    from pycontain.actuate.cgroups import detect_layout
    from pycontain.actuate.cgroups.layout import parse_proc_cgroup
    layout = detect_layout()
    if layout.kind != "hybrid":
        pytest.skip("pure cgroup2 host: no v1 hierarchies")
    sock, _ = node_daemon
    with open("/proc/self/cgroup") as fh:
        own = parse_proc_cgroup(fh.read())          # the test's = the daemon's (its child)
    p = client.Popen(["cat", "/proc/self/cgroup"], socket=str(sock), name="home", stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=10)
    agent = parse_proc_cgroup(out)
    leaf = agent[""].rsplit("/", 1)[1]
    home = agent[""].rsplit("/", 2)[1]
    assert home.startswith("pycontain-agents") and leaf.startswith("pycontain-home")
    for ctrl in ("cpu", "memory", "pids"):
        if ctrl in layout.v1:
            assert agent[ctrl] == f"{own[ctrl].rstrip('/')}/{home}/{leaf}", (ctrl, agent[ctrl])
    for ctrl in ("cpuacct", "freezer"):
        if ctrl in layout.v1 and layout.v1[ctrl] != layout.v1.get("cpu"):
            assert agent[ctrl] == own[ctrl], (ctrl, agent[ctrl])


def test_a_failing_step_in_the_child_leaves_no_half_made_agent(node_daemon, tmp_path, spawn_path, monkeypatch):
    from pycontain import client
    from pycontain.actuate.cgroups.agent import AgentCgroup
    from pycontain.core.errors import EnvironmentProblem
    from pycontain.observe.state_api import StateClient
    sock, _ = node_daemon
    made = []
    real = AgentCgroup.procs_files

    def first_join_fails(self):             # as if a cgroup dir vanished under the child
        made.append(self.v2_path)
        return [os.path.join(self.v2_path, "gone", "cgroup.procs"), *real(self)]
    monkeypatch.setattr(AgentCgroup, "procs_files", first_join_fails)
    sentinel = tmp_path / "ran"
    with pytest.raises(EnvironmentProblem) as e:
        client.Popen(["sh", "-c", f"echo ran > {sentinel}"], socket=str(sock), name="halfmade")
    assert "\n" not in str(e.value) and str(e.value).startswith("could not place the agent in its cgroup")
    if spawn_path == "native":
        assert "gone/cgroup.procs: No such file or directory" in str(e.value)
    time.sleep(0.3)
    assert not sentinel.exists()
    assert made and not os.path.exists(made[0])         # the daemon removed the cgroup
    agents = StateClient(str(sock)).state()["agents"]
    assert not [a for a in agents if a["name"].startswith("halfmade")]


VANDAL = "echo pwned > {victim}; kill -9 {pid}; id -u > {report}"


def test_episodes_of_a_root_worker_run_as_fresh_uids_that_cannot_touch_the_node(node_daemon, open_dir):
    """A rollout worker runs as root. Without pycontain its episode could
    rewrite any root-owned file (cron, sshd keys, pycontain's own code) and
    kill any root process (the daemon). Through the daemon each episode runs
    as a uid of its own, given back when the episode is done."""
    from pycontain import client
    sock, _ = node_daemon
    victim = open_dir / "victim"

    def target():
        victim.write_text("intact\n")
        os.chmod(victim, 0o644)
        return subprocess.Popen(["sleep", "60"])
    bystander = target()
    bare = subprocess.run(["sh", "-c", VANDAL.format(victim=victim, pid=bystander.pid, report=open_dir / "r")])
    assert bare.returncode == 0 and victim.read_text() == "pwned\n"     # the attack works unguarded
    assert bystander.wait(5) == -signal.SIGKILL

    bystander = target()
    try:
        ps = client.popen_many([["sh", "-c", VANDAL.format(victim=victim, pid=bystander.pid,
                                                           report=open_dir / f"r{i}")] for i in range(2)],
                               socket=str(sock), name="vandal")
        assert [p.wait(10) for p in ps] == [0, 0]           # the shell ran to its end
        assert victim.read_text() == "intact\n" and bystander.poll() is None
        uids = [int((open_dir / f"r{i}").read_text()) for i in range(2)]
        assert all(dynamic_uid(u) for u in uids) and uids[0] != uids[1], uids
        for uid in uids:                                     # each uid given back, its home removed
            assert wait_for(lambda u=uid: not os.path.exists(f"/run/pycontain-agents/{u}") and
                            not os.path.exists(f"/run/pycontain/dynamic-users/{u}"), 10), uid
    finally:
        bystander.kill()
        bystander.wait()


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def test_the_node_policys_privileges_reach_agents_started_through_it(node_daemon, privileged, tmp_path):
    """Read from outside, in /proc, while the agent runs: the default node
    policy's agent has a seccomp filter, no_new_privs and a fresh uid; a node
    policy that relaxes them gives an agent of the caller's uid without them."""
    sock, _ = node_daemon
    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text("extends: default\nname: relaxed\n"
                       "privileges: {seccomp: false, no_new_privs: false, dynamic_user: false}\n")
    sock2 = tmp_path / "relaxed.sock"
    env = dict(os.environ, PYCONTAIN_BPFFS=pin_root_for("relaxed"))
    d2 = subprocess.Popen(PYCONTAIN + ["daemon", "--allow-no-gpu", "--policy", str(relaxed), "--socket", str(sock2),
                                       "--scan-interval", "0.3"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert wait_for(lambda: sock2.exists(), 60), "the second daemon never served its socket"
        seen = {}
        for name, path in (("default", sock), ("relaxed", sock2)):
            p = subprocess.Popen(PYCONTAIN + ["run", "--daemon-only", "--daemon-socket", str(path), "--",
                                              "sleep", "30"], stderr=subprocess.PIPE, text=True, cwd="/")
            assert wait_for(lambda p=p: _children(p.pid, b"sleep\x0030"), timeout=30), "the agent never started"
            seen[name] = _status(_children(p.pid, b"sleep\x0030")[0])
            p.send_signal(signal.SIGTERM)
            p.wait(10)
        uid = int(seen["default"]["Uid"].split()[0])
        assert dynamic_uid(uid) and seen["default"]["Seccomp"] == "2" and seen["default"]["NoNewPrivs"] == "1"
        assert seen["relaxed"]["Uid"].split()[0] == "0"
        assert seen["relaxed"]["Seccomp"] == "0" and seen["relaxed"]["NoNewPrivs"] == "0"
        assert seen["relaxed"]["CapBnd"] == seen["default"]["CapBnd"] != _status(os.getpid())["CapBnd"]
    finally:
        d2.terminate()
        out, _ = d2.communicate(timeout=20)
        from pycontain.kernel.pins import release_all
        release_all(env["PYCONTAIN_BPFFS"])
    assert d2.returncode == 0, out


TRAPPING = ("echo ready >> {log}; trap 'echo got-signal >> {log}' TERM INT; "
            "( trap '' TERM INT; exec sleep {marker} ) & while :; do sleep 0.1; done")


def _agent_running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True).returncode == 0


def _start_trapping(sock, open_dir: Path, marker: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = open_dir / f"agent-{marker}.log"
    log.write_text("")
    os.chmod(log, 0o666)
    p = subprocess.Popen(PYCONTAIN + ["run", "--daemon-only", "--daemon-socket", str(sock), *extra, "--",
                                      "bash", "-c", TRAPPING.format(log=log, marker=marker)],
                         stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: "ready" in log.read_text() and _agent_running(marker), 30), "the agent never started"
    return p, log


def test_run_through_the_daemon_kills_a_trapping_agent_after_stop_timeout(node_daemon, open_dir):
    """As standalone (test_run_stop.py): the signal reaches the agent, which
    traps it; after --stop-timeout every process of its cgroup is killed."""
    sock, _ = node_daemon
    p, log = _start_trapping(sock, open_dir, "318", "--stop-timeout", "1")
    p.send_signal(signal.SIGTERM)
    rc = p.wait(30)
    err = p.stderr.read()
    assert "got-signal" in log.read_text(), "the agent never saw the forwarded SIGTERM"
    assert rc == 128 + signal.SIGKILL and "did not stop within 1s" in err, err
    assert not _agent_running("318"), "the agent's background child outlived the stop"


def test_an_agent_ends_when_its_run_is_killed_outright(node_daemon, open_dir):
    """Slurm sends SIGKILL after KillWait, to the job's processes only: the
    agent, in the daemon's cgroup, would run on. Without the daemon tying it
    to its run, it does (shown first with a plain process tree); with it,
    the daemon ends the agent once the run is gone."""
    bare = subprocess.Popen(["bash", "-c", "( trap '' TERM INT; exec sleep 319 ) & wait"])
    try:
        assert wait_for(lambda: _agent_running("319"), 10)
        bare.kill()
        bare.wait()
        time.sleep(1.0)
        assert _agent_running("319")                  # a killed parent leaves its child running
    finally:
        subprocess.run(["pkill", "-KILL", "-f", "^sleep 319$"])
    sock, _ = node_daemon
    p, _log = _start_trapping(sock, open_dir, "320")
    p.kill()
    p.wait()
    assert wait_for(lambda: not _agent_running("320"), 10), "the agent outlived the run that started it"
