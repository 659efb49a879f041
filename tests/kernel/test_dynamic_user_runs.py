"""Issue 10 part 3: `pycontain run` gives each agent a fresh uid by default.

Checked from outside: the uid the agent's process had (written by it to an
open directory), the lease and private home gone after exit, two agents
running at once never sharing a uid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
LO, HI = 61184, 65519


@pytest.fixture
def open_dir(privileged):
    d = tempfile.mkdtemp(prefix="pc-dyn-", dir="/tmp")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(script: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(PYCONTAIN + ["run", "--no-daemon", *extra, "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")


def test_each_agent_gets_its_own_uid_and_gives_it_back(open_dir):
    out = [os.path.join(open_dir, f"a{i}") for i in range(2)]
    # each agent reports its uid and home, writes in its home, then waits for the other
    script = ('id -u > {o}.tmp; echo "$HOME" >> {o}.tmp; touch "$HOME/work" && echo wrote >> {o}.tmp; '
              'mv {o}.tmp {o}; i=0; while [ ! -e {other} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done')
    procs = [start(script.format(o=out[i], other=out[1 - i])) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    reports = [open(o).read().split() for o in out]
    uids = [int(r[0]) for r in reports]
    assert all(LO <= u <= HI for u in uids), uids
    assert uids[0] != uids[1]
    for (uid, home, wrote) in reports:
        assert home == f"/run/pycontain-agents/{uid}" and wrote == "wrote"
        assert not os.path.exists(home)                              # removed at exit
        assert not os.path.exists(f"/run/pycontain/dynamic-users/{uid}")   # lease given back


def test_user_names_the_uid_and_policy_can_turn_it_off(open_dir, tmp_path):
    o = os.path.join(open_dir, "u")
    p = start(f"id -u > {o}", "--user", "nobody")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert open(o).read().strip() == str(__import__("pwd").getpwnam("nobody").pw_uid)
    pol = tmp_path / "p.yaml"
    pol.write_text("name: t\nprivileges:\n  dynamic_user: false\n")
    p = start(f"id -u > {o}", "--policy", str(pol))
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert open(o).read().strip() == "0"


def test_files_left_in_shared_scratch_are_removed(open_dir):
    o = os.path.join(open_dir, "s")
    p = start(f"id -u > {o}; echo secret > /tmp/pc-dyn-leftover-$(id -u); mkdir -p /dev/shm/pc-dyn-d-$(id -u)")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    uid = open(o).read().strip()
    assert not os.path.exists(f"/tmp/pc-dyn-leftover-{uid}")
    assert not os.path.exists(f"/dev/shm/pc-dyn-d-{uid}")


# leaves state the next agent with this uid could read: a System V segment,
# semaphore set and queue, a file in a shared sticky directory under /tmp
# and one in /run/lock; prints its uid
LEAVE = ("import ctypes,os,sys\nlibc=ctypes.CDLL(None,use_errno=True)\n"
         "ids=[libc.shmget(0,4096,0o1600), libc.semget(0,1,0o1600), libc.msgget(0,0o1600)]\n"
         "for p in sys.argv[1:]: open(p,'w').write('for the next episode')\n"
         "print(os.getuid(), *ids)\n")


def test_what_an_agent_leaves_in_shared_places_goes_with_its_uid(privileged):
    from pycontain.actuate.ipc_clean import owned_ids, remove_ipc
    shared = tempfile.mkdtemp(prefix=".pc-shared-", dir="/tmp")
    os.chmod(shared, 0o1777)                     # as /tmp/.X11-unix: root's, world-writable, sticky
    files = [os.path.join(shared, "note"), "/run/lock/pc-note"]
    try:
        bare = subprocess.run(["setpriv", "--reuid=61183", "--regid=61183", "--clear-groups", "/usr/bin/python3",
                               "-c", LEAVE, *files], capture_output=True, text=True, check=True)
        assert all(owned_ids(k, {61183}) for k in ("shm", "sem", "msg"))    # bare: it all outlives the process
        assert all(os.path.exists(f) for f in files)
        remove_ipc({61183})
        for f in files:
            os.unlink(f)
        r = subprocess.run(PYCONTAIN + ["run", "--no-daemon", "--", "/usr/bin/python3", "-c", LEAVE, *files],
                           capture_output=True, text=True, timeout=120, cwd="/tmp")
        uid = int(r.stdout.split()[0])
        assert LO <= uid <= HI, r.stdout
        assert not any(owned_ids(k, {uid}) for k in ("shm", "sem", "msg"))
        assert not any(os.path.exists(f) for f in files), bare.stdout
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        if os.path.exists(files[1]):
            os.unlink(files[1])
