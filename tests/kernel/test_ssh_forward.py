"""SSH forwards set in a configuration file (issue 12 part 7), through
`pycontain run`: the held ssh exec is judged on what `ssh -G` resolves (-F,
Include, Match), not on its argv. Bare, the same ssh carries the forward to
the far side; under pycontain it is killed before it sends a byte, while the
same session without the forward reaches the far side."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
# OpenSSH refuses to start for a uid without a passwd entry (pycontain's dynamic uids):
# a real ssh session needs a real account, root here
AS_ROOT = ["run", "--user", "root"]
SSH = shutil.which("ssh")

pytestmark = pytest.mark.skipif(SSH is None, reason="no ssh client (scripts/install-test-tools.sh)")


def _configs(home, host: str):
    """~/.ssh/config Includes a file whose Match block adds ROME's reverse tunnel."""
    d = home / ".ssh"
    d.mkdir(parents=True)
    (d / "tunnel.conf").write_text(f"Match host {host}\n  RemoteForward 2222 localhost:22\n")
    (d / "config").write_text(f"Include {d}/tunnel.conf\nHost *\n  StrictHostKeyChecking no\n"
                              f"  UserKnownHostsFile /dev/null\n  BatchMode yes\n  ConnectTimeout 1\n")
    (d / "plain").write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                             "  BatchMode yes\n  ConnectTimeout 1\n")
    for f in d.iterdir():
        f.chmod(0o600)
    return d / "config", d / "plain"


def _ssh(cfg, host: str, port: int) -> list[str]:
    return ["timeout", "5", SSH, "-F", str(cfg), "-p", str(port), f"x@{host}", "true"]


def test_config_remote_forward_is_killed_under_run(privileged, testhost, tmp_path):
    host = testhost.peer_ip4
    home = tmp_path / "home"
    tunnel_cfg, plain_cfg = _configs(home, host)
    env = {**os.environ, "HOME": str(home)}
    # the attack works bare: ssh resolves the forward from the files and talks to the far side
    g = subprocess.run([SSH, "-G", "-F", str(tunnel_cfg), host], capture_output=True, text=True, env=env, check=True)
    assert "remoteforward 2222 [localhost]:22" in g.stdout
    bare = testhost.tcp_listener(0)
    subprocess.run(_ssh(tunnel_cfg, host, bare.port), capture_output=True, env=env, timeout=20, check=False)
    assert bare.wait(contains=b"SSH-2.0-")

    policy = tmp_path / "policy.yaml"
    policy.write_text(f"extends: default\nname: t-ssh-forward\nnetwork:\n  ssh:\n    allow: [{{cidr: {host}/32}}]\n")
    inside, control = testhost.tcp_listener(0), testhost.tcp_listener(0)
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\n" + " ".join(_ssh(tunnel_cfg, host, inside.port)) + "\necho tunnel=$?\n"
                      + " ".join(_ssh(plain_cfg, host, control.port)) + "\necho plain=$?\n")
    script.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    audit = tmp_path / "audit.jsonl"
    r = subprocess.run(PYCONTAIN + [*AS_ROOT, "--name", "t-sshfwd", "--policy", str(policy), "--audit-log",
                                    str(audit), "--", str(script)],
                       capture_output=True, text=True, env=env, timeout=90)
    assert control.wait(contains=b"SSH-2.0-"), r.stdout + r.stderr    # the plain session still reaches the host
    assert not inside.wait(contains=b"SSH-", timeout=1.0)            # the tunnelling one never sent a byte
    assert inside.accepted == 0
    assert "tunnel=137" in r.stdout and "plain=255" in r.stdout, r.stdout   # SIGKILL; auth failed
    recs = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    viol = [x for x in recs if x.get("kind") == "violation" and x.get("rule") == "network.ssh.forward"]
    assert viol and "remoteforward 2222" in viol[0].get("reason", ""), [x for x in recs if x.get("kind") == "violation"]


def _edit_script(cfg, inc_match, inc_add, host: str, port: int) -> str:
    """An agent that runs a plain session (its `ssh -G` answer is cached),
    makes an included file's Match name the peer (same size, same inode,
    mtime put back), runs the same ssh; puts the file back (a plain session
    again), appends a RemoteForward to the other included file, runs it again."""
    ssh = [" ".join(_ssh(cfg, host, port))] * 4
    return "\n".join([
        "#!/bin/sh", f"{ssh[0]}; echo plain1=$?",
        f"cp -p {inc_match} {inc_match}.ref",
        f"sed 's/^Match host .*/Match host {host}/' {inc_match}.ref > {inc_match}.new",
        f"cat {inc_match}.new > {inc_match}", f"touch -r {inc_match}.ref {inc_match}", f"{ssh[1]}; echo matched=$?",
        f"cat {inc_match}.ref > {inc_match}", f"{ssh[2]}; echo plain2=$?",
        f"printf '  RemoteForward 2223 localhost:22\\n' >> {inc_add}", f"{ssh[3]}; echo added=$?", ""])


def test_an_edited_included_file_is_judged_afresh(privileged, testhost):
    """The `ssh -G` answer is cached (issue 11, hold time); an agent that edits
    an included file between two runs gets a fresh judgement: the Match that
    now names the peer, or the RemoteForward it appended, kills that ssh."""
    host = testhost.peer_ip4
    last = host.rsplit(".", 1)[1]
    decoy = "198.51.100." + ("9" * len(last) if last != "9" * len(last) else "8" * len(last))   # same size
    quiet = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="pc-sshedit-"))   # not /tmp: churn there defeats the cache
    inc_match, inc_add, cfg, script = (quiet / n for n in ("match.conf", "extra.conf", "config", "agent.sh"))

    def run(prefix: list[str]):
        inc_match.write_text(f"Match host {decoy}\n  RemoteForward 2222 localhost:22\n")
        inc_add.write_text("Host *\n  BatchMode yes\n")
        cfg.write_text(f"Include {inc_match} {inc_add}\nHost *\n  StrictHostKeyChecking no\n"
                       "  UserKnownHostsFile /dev/null\n  ConnectTimeout 1\n")
        for f in (inc_match, inc_add, cfg):
            f.chmod(0o600)
        listener = testhost.tcp_listener(0)       # the same argv each time: one cache key but for the files
        script.write_text(_edit_script(cfg, inc_match, inc_add, host, listener.port))
        script.chmod(0o755)
        r = subprocess.run([*prefix, str(script)], capture_output=True, text=True, timeout=120)
        return r, listener

    try:
        os.chmod(quiet, 0o755)
        r, listener = run([])      # bare: all four sessions, the two with a forward too, reach the far side
        assert listener.wait(accepted=4) and "matched=255" in r.stdout and "added=255" in r.stdout, r.stdout
        g = subprocess.run([SSH, "-G", "-F", str(cfg), host], capture_output=True, text=True, check=True)
        assert "remoteforward 2223 [localhost]:22" in g.stdout

        policy, audit = quiet / "policy.yaml", quiet / "audit.jsonl"
        policy.write_text(f"extends: default\nname: t-ssh-edit\nnetwork:\n  ssh:\n    allow: [{{cidr: {host}/32}}]\n")
        r, listener = run(
            PYCONTAIN + [*AS_ROOT, "--name", "t-sshedit", "--policy", str(policy), "--audit-log", str(audit), "--"])
        assert "plain1=255" in r.stdout and "plain2=255" in r.stdout, r.stdout + r.stderr   # auth failed
        assert "matched=137" in r.stdout and "added=137" in r.stdout, r.stdout               # SIGKILL, held
        assert listener.wait(accepted=2) and not listener.wait(accepted=3, timeout=1.0)     # the plain ones only
        reasons = [x.get("reason", "") for x in map(json.loads, audit.read_text().splitlines())
                   if x.get("rule") == "network.ssh.forward"]
        assert any("remoteforward 2222" in x for x in reasons) and any("remoteforward 2223" in x for x in reasons)
    finally:
        shutil.rmtree(quiet, ignore_errors=True)


def test_a_configuration_bound_over_in_an_own_mount_namespace_is_refused(privileged, testhost, tmp_path):
    """In its own user and mount namespace (unshare -Urm) the agent binds its
    tunnel config over the plain one: the node's query would read the plain
    file, ssh reads the tunnel. Bare the forward reaches the host; under
    pycontain the ssh is killed (no query can see its files: fail closed)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    host = testhost.peer_ip4
    tunnel_cfg, plain_cfg = _configs(tmp_path / "home", host)
    os.chmod(tmp_path, 0o755)
    script = tmp_path / "agent.sh"

    def run(prefix: list[str]):
        listener = testhost.tcp_listener(0)
        script.write_text(f"#!/bin/sh\nunshare -Urm /bin/sh -c 'mount --bind {tunnel_cfg} {plain_cfg} && "
                          + " ".join(_ssh(plain_cfg, host, listener.port)) + "'\necho bound=$?\n")
        script.chmod(0o755)
        return subprocess.run([*prefix, str(script)], capture_output=True, text=True, timeout=90), listener

    r, bare = run([])
    assert bare.wait(contains=b"SSH-2.0-"), r.stdout + r.stderr
    policy = tmp_path / "policy.yaml"
    # user namespaces allowed: the query's own refusal is what is tested (by
    # default the agent cannot make the namespace: test_privileges.py)
    policy.write_text(f"extends: default\nname: t-ssh-ns\nnetwork:\n  ssh:\n    allow: [{{cidr: {host}/32}}]\n"
                      "privileges:\n  user_namespaces: true\n")
    r, inside = run(PYCONTAIN + [*AS_ROOT, "--name", "t-sshns", "--policy", str(policy), "--"])
    assert "bound=137" in r.stdout, r.stdout + r.stderr
    assert not inside.wait(contains=b"SSH-", timeout=1.0) and inside.accepted == 0


def test_an_escape_command_line_is_killed_under_run(privileged, testhost, tmp_path):
    """`ssh -tt -oEnableEscapeCommandline=yes host`: on the pty the agent
    types `~C` then `-R 2222:localhost:22` and ssh opens a reverse forward
    mid-session, which no argv or configuration rule sees. Bare, the session
    reaches the host; under pycontain the ssh is killed before it sends a byte."""
    host = testhost.peer_ip4
    _, plain_cfg = _configs(tmp_path / "home", host)
    os.chmod(tmp_path, 0o755)
    script = tmp_path / "agent.sh"

    def run(prefix: list[str]):
        listener = testhost.tcp_listener(0)
        ssh = _ssh(plain_cfg, host, listener.port)
        script.write_text("#!/bin/sh\n" + " ".join([*ssh[:3], "-tt", "-oEnableEscapeCommandline=yes", *ssh[3:]])
                          + " </dev/null\necho escape=$?\n")
        script.chmod(0o755)
        return subprocess.run([*prefix, str(script)], capture_output=True, text=True, timeout=90), listener

    r, bare = run([])
    assert bare.wait(contains=b"SSH-2.0-"), r.stdout + r.stderr
    policy, audit = tmp_path / "policy.yaml", tmp_path / "audit.jsonl"
    policy.write_text(f"extends: default\nname: t-ssh-esc\nnetwork:\n  ssh:\n    allow: [{{cidr: {host}/32}}]\n")
    r, inside = run(PYCONTAIN + [*AS_ROOT, "--name", "t-sshesc", "--policy", str(policy), "--audit-log", str(audit),
                                 "--"])
    assert "escape=137" in r.stdout, r.stdout + r.stderr
    assert not inside.wait(contains=b"SSH-", timeout=1.0) and inside.accepted == 0
    reasons = [x.get("reason", "") for x in map(json.loads, audit.read_text().splitlines())
               if x.get("rule") == "network.ssh.forward"]
    assert any("enableescapecommandline yes" in x for x in reasons), reasons


OPEN_MEM = ("import os, sys\ntry:\n    os.close(os.open(f'/proc/{sys.argv[1]}/mem', os.O_RDWR))\n    print('opened')\n"
            "except OSError as e:\n    print('refused', e.errno)\n")


def _query_pid(cfg: Path, deadline: float) -> int:
    """The pid of the `ssh -G -F cfg` the controller started (it blocks on a FIFO)."""
    while time.monotonic() < deadline:
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and f"-F{cfg}".encode() in (p / "cmdline").read_bytes().split(b"\0"):
                    return int(p.name)
            except OSError:
                pass
        time.sleep(0.01)
    raise AssertionError("no ssh -G query seen")


def _release(fifo: Path) -> None:
    """Feed the FIFO the query blocks on (non-blocking: no reader, no wait)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.write(fd, b"Host *\n  Port 2200\n")
    os.close(fd)


def _agent_opens_query_memory(cfg: Path, fifo: Path, start, uid: int, gid: int) -> tuple[str, str]:
    """Start a query (start() returns its output when it ends), find it, try
    to open its memory read-write as a process of the agent's uid; then feed
    the FIFO so the query ends. What the open did, and the query's output."""
    done: list = []
    t = threading.Thread(target=lambda: done.append(start()))
    t.start()
    try:
        pid = _query_pid(cfg, time.monotonic() + 5)
        r = subprocess.run([sys.executable, "-c", OPEN_MEM, str(pid)], user=uid, group=gid, extra_groups=[],
                           capture_output=True, text=True, timeout=10)
    finally:
        _release(fifo)
        t.join(15)
    assert done and "port 2200" in (done[0] or ""), done     # the FIFO was read: the query saw the Include
    return r.stdout.strip(), done[0]


@pytest.fixture
def open_dir():
    """A directory the agent's uid can reach (tmp_path's parents are 0700)."""
    d = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="pc-sshquery-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_config_query_cannot_be_taken_over_by_the_agents_uid(privileged, open_dir, monkeypatch):
    """The query runs as the agent's uid outside its cgroup. A process of that
    uid can open a plain same-uid ssh's /proc/PID/mem for writing (code
    injection: an uncontained process); the controller's query it cannot.
    A FIFO reached through Include keeps the query alive meanwhile; a
    group-only-readable Include shows the agent's gid still reads files."""
    from pycontain.actuate import ssh_config
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, nobody.pw_gid
    fifo, group_only, cfg = open_dir / "fifo", open_dir / "group.conf", open_dir / "cfg"
    os.mkfifo(fifo, 0o644)
    group_only.write_text("Host *\n  User gitgroup\n")
    os.chown(group_only, 0, gid)
    group_only.chmod(0o640)
    cfg.write_text(f"Include {group_only}\nInclude {fifo}\n")
    cfg.chmod(0o644)
    query = ["-G", f"-F{cfg}", "--", "h"]
    env = {b"HOME": nobody.pw_dir.encode(), b"PATH": b"/usr/bin:/bin"}

    def bare():      # how the query ran before: uid and all gids the agent's
        return subprocess.run([SSH, *query], user=uid, group=gid, extra_groups=[], env=env, cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10).stdout
    assert _agent_opens_query_memory(cfg, fifo, bare, uid, gid)[0] == "opened"

    monkeypatch.setattr(ssh_config, "TIMEOUT_S", 10.0)     # time to find it; production: 1 s
    opened, out = _agent_opens_query_memory(
        cfg, fifo, lambda: ssh_config._run_query(SSH, query, (uid, gid, []), env, "/"), uid, gid)
    assert opened == "refused 13"                            # EACCES
    assert "user gitgroup" in out and "hostname h" in out    # the same files read, the group-only one too
