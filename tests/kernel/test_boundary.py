"""Issue 10: contained from the birth of the cgroup, and for life.

Each test first shows the move works without pycontain, then that it fails
under it, checked from outside (a sentinel file the miner would write)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
EPISODES = 100


def cgroup2_root() -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.startswith("cgroup2 "):
            return left.split()[4]
    pytest.fail("no cgroup2 mount")


def _remove_tree(d: Path) -> None:
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [d]:
        for _ in range(50):
            try:
                for pid in (sub / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                sub.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


@pytest.fixture
def parent_cgroup(privileged):
    d = Path(cgroup2_root()) / f"pc-birth-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    _remove_tree(d)


def miner(tmp: Path) -> Path:
    """A denied program (basename xmrig) that writes the sentinel named by its argument."""
    p = tmp / "xmrig"
    p.write_text("#!/bin/sh\ntouch \"$1\"\n")
    p.chmod(0o755)
    return p


def episodes(parent: Path, prog: Path, out: Path, n: int) -> None:
    """n times, back to back: make an agent cgroup, start a shell in it that
    runs the miner as its very first exec (the orchestrator's move)."""
    out.mkdir()
    script = "\n".join([
        "set -e",
        f"for i in $(seq 1 {n}); do",
        f"  mkdir {parent}/agent-$i",
        f"  sh -c 'echo $$ > {parent}/agent-'$i'/cgroup.procs; exec {prog} {out}/ran-'$i || true",
        "done",
    ])
    subprocess.run(["sh", "-c", script], check=True, timeout=120)


def daemon(tmp: Path, glob: str):
    pol = tmp / "policy.yaml"
    pol.write_text(f"name: birth\nmode: enforce\nagents:\n  - name: born\n    cgroup: \"{glob}\"\n"
                   "exec:\n  deny: [xmrig]\nnetwork:\n  default: allow\n")
    sock, audit = tmp / "pc.sock", tmp / "audit.jsonl"
    d = subprocess.Popen(PYCONTAIN + ["daemon", "--policy", str(pol), "--socket", str(sock),
                                      "--audit-log", str(audit), "--scan-interval", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 60
    while time.monotonic() < end and not sock.exists():
        if d.poll() is not None:
            pytest.fail(f"daemon exited: {d.stdout.read() if d.stdout else ''}")
        time.sleep(0.1)
    assert sock.exists(), "daemon never became ready"
    return d, audit


def stop(d) -> str:
    d.terminate()
    out, _ = d.communicate(timeout=30)
    return out


def test_birth_race_every_first_exec_is_judged(parent_cgroup, tmp_path):
    prog = miner(tmp_path)
    # bare: the miner runs in every fresh cgroup
    bare = parent_cgroup / "bare"
    bare.mkdir()
    episodes(bare, prog, tmp_path / "bare", EPISODES)
    assert len(list((tmp_path / "bare").iterdir())) == EPISODES

    rel = os.path.relpath(parent_cgroup, cgroup2_root())
    d, audit = daemon(tmp_path, f"{rel}/contained/agent-*")
    try:
        (parent_cgroup / "contained").mkdir()
        # the scan runs every 30 s: only the kernel's birth hook can catch these
        episodes(parent_cgroup / "contained", prog, tmp_path / "contained", EPISODES)
        ran = sorted(p.name for p in (tmp_path / "contained").iterdir())
        assert ran == [], f"{len(ran)} of {EPISODES} first execs ran: {ran[:5]}"
        time.sleep(1)   # the daemon names and adopts them
    finally:
        out = stop(d)
    recs = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    births = [r for r in recs if r["kind"] == "cgroup_birth"]
    denied = [r for r in recs if r["kind"] == "exec" and r.get("verdict") == "deny"]
    assert len(births) == EPISODES and len(denied) == EPISODES, out
    assert any(r["kind"] == "agent-start" and str(r.get("agent", "")).startswith("born:agent-") for r in recs)


def test_leaving_the_cgroup_as_root_is_killed(parent_cgroup, tmp_path):
    prog = miner(tmp_path)
    outside = parent_cgroup / "elsewhere"
    outside.mkdir()
    escape = (f"echo $$ > {outside}/cgroup.procs && exec {prog} {{sentinel}}")
    # bare: a root process moves itself and runs the miner
    bare = tmp_path / "bare-ran"
    subprocess.run(["sh", "-c", escape.format(sentinel=bare)], timeout=30)
    assert bare.exists()

    under = tmp_path / "contained-ran"
    audit = tmp_path / "audit.jsonl"
    # --user root: the agent keeps uid 0 (and may write any cgroup.procs)
    r = subprocess.run(PYCONTAIN + ["run", "--name", "escaper", "--user", "root", "--audit-log", str(audit),
                                    "--", "sh", "-c", escape.format(sentinel=under) + "; echo survived"],
                       capture_output=True, text=True, timeout=120)
    assert not under.exists(), "the escaped agent ran its miner"
    assert "survived" not in r.stdout
    recs = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    esc = [x for x in recs if x["kind"] == "boundary"]
    assert esc and esc[0]["dst_cgroup"].endswith("/elsewhere")
    assert any(x["kind"] == "violation" and x.get("rule") == "boundary.escape" for x in recs)


CLONE_INTO_CGROUP_AGENT = r'''
import ctypes, os, struct, sys
dst, miner, sentinel = sys.argv[1:4]
fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
# struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
# stack, stack_size, tls, set_tid, set_tid_size, cgroup
args = ctypes.create_string_buffer(struct.pack("11Q", 0x200000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, fd))
libc = ctypes.CDLL(None, use_errno=True)
pid = libc.syscall(435, args, ctypes.c_size_t(88))
if pid == 0:                  # the child, born in dst
    with open(sentinel, "w") as fh:
        fh.write(open("/proc/self/cgroup").read())
    os.execv(miner, [miner, sentinel + ".miner"])
if pid < 0:
    sys.exit(f"clone3: errno {ctypes.get_errno()}")
os.waitpid(pid, 0)
print("parent survived")
'''


def test_clone_into_another_cgroup_is_killed(parent_cgroup, tmp_path):
    """clone3(CLONE_INTO_CGROUP) fires no cgroup_attach_task: the fork hook
    must catch the child born outside the agent's cgroup."""
    prog = miner(tmp_path)
    outside = parent_cgroup / "elsewhere"
    outside.mkdir()
    script = tmp_path / "clone_into.py"
    script.write_text(CLONE_INTO_CGROUP_AGENT)
    # bare: a root process's child is born in the other cgroup and runs the miner
    bare = tmp_path / "bare-born"
    r = subprocess.run([sys.executable, str(script), str(outside), str(prog), str(bare)],
                       capture_output=True, text=True, timeout=30)
    assert bare.exists(), r.stderr
    assert f"{os.sep}{outside.name}" in bare.read_text()     # it was born there
    assert Path(f"{bare}.miner").exists()

    under = tmp_path / "contained-born"
    audit = tmp_path / "audit.jsonl"
    pol = tmp_path / "policy.yaml"
    # seccomp off: `run` answers clone3 with ENOSYS; an adopted agent has no seccomp
    pol.write_text("name: clone-into\nmode: enforce\nexec:\n  deny: [xmrig]\nnetwork:\n  default: allow\n"
                   "privileges:\n  seccomp: false\n")
    r = subprocess.run(PYCONTAIN + ["run", "--name", "cloner", "--user", "root", "--policy", str(pol),
                                    "--audit-log", str(audit), "--", sys.executable, str(script),
                                    str(outside), str(prog), str(under)],
                       capture_output=True, text=True, timeout=120)
    time.sleep(0.5)
    assert not under.exists(), "the child born outside the agent wrote its sentinel"
    assert not Path(f"{under}.miner").exists()
    assert "parent survived" not in r.stdout
    recs = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    esc = [x for x in recs if x["kind"] == "boundary"]
    assert esc and esc[0]["dst_cgroup"].endswith("elsewhere"), (recs, r.stderr)
    assert any(x["kind"] == "violation" and x.get("rule") == "boundary.escape" for x in recs)


def _v1_root(controller: str) -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields = right.split()
        if fields[0] == "cgroup" and controller in fields[-1].split(","):
            return Path(left.split()[4])
    return None


def test_leaving_a_v1_budget_cgroup_as_root_is_killed(privileged, tmp_path):
    """On hybrid hosts the budgets live in v1 hierarchies: an agent that moves
    itself out of its memory/pids cgroup escapes them while its v2 identity
    stays. An agent task may not move anything in a v1 hierarchy."""
    root = _v1_root("pids")
    if root is None:
        pytest.skip("no cgroup v1 pids hierarchy (pure cgroup v2 host)")
    outside = root / f"pc-v1-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    try:
        escape = f"echo $$ > {outside}/cgroup.procs && touch {{sentinel}}"
        bare = tmp_path / "bare-moved"
        subprocess.run(["sh", "-c", escape.format(sentinel=bare)], timeout=30)
        assert bare.exists()                    # bare: the move works and the next command runs

        under = tmp_path / "contained-moved"
        audit = tmp_path / "audit.jsonl"
        r = subprocess.run(PYCONTAIN + ["run", "--name", "v1-escaper", "--user", "root", "--audit-log", str(audit),
                                        "--", "sh", "-c", escape.format(sentinel=under) + "; echo survived"],
                           capture_output=True, text=True, timeout=120)
        assert not under.exists(), "the agent ran on after leaving its v1 cgroup"
        assert "survived" not in r.stdout
        assert (outside / "cgroup.procs").read_text().strip() == ""     # nothing of it lives on there
        recs = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
        esc = [x for x in recs if x["kind"] == "boundary"]
        assert esc and esc[0]["dst_cgroup"].endswith(outside.name), esc
        assert any(x["kind"] == "violation" and x.get("rule") == "boundary.escape" for x in recs)
    finally:
        _remove_tree(outside)
