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
