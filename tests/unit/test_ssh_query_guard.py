"""The held-ssh configuration query refuses, before it runs ssh, a first
configuration file that would block it (a FIFO, a device): ssh would sit in
the controller's ring callback until the query's timeout. /dev/null, a
common `-F`, and regular files still go to the query."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from pycontain.actuate import ssh_config
from pycontain.actuate.ssh_config_cache import AnswerCache


@pytest.fixture
def held(monkeypatch):
    """A fake /proc entry for a held ssh of root, and the queries it would run."""
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="pc-sshguard-")
    proc = os.path.join(d, "proc", "7")
    os.makedirs(proc)
    with open(os.path.join(proc, "status"), "w") as fh:
        fh.write("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t0\n")
    with open(os.path.join(proc, "environ"), "wb") as fh:
        fh.write(b"HOME=" + d.encode() + b"\0")
    os.symlink(d, os.path.join(proc, "cwd"))
    os.symlink("/proc/self/ns", os.path.join(proc, "ns"))
    runs: list[tuple] = []
    monkeypatch.setattr(ssh_config, "ANSWERS", AnswerCache())
    monkeypatch.setattr(ssh_config.shutil, "which", lambda *a, **k: "/usr/bin/ssh")
    monkeypatch.setattr(ssh_config, "_run_query", lambda *a: runs.append(a) or "hostname h\n")
    yield d, os.path.dirname(proc), runs
    shutil.rmtree(d)


def ask(held, config: str) -> str | None:
    _, proc_root, _ = held
    return ssh_config.effective_config(7, ["-G", f"-F{config}", "--", "h"], proc_root)


def test_a_fifo_config_is_refused_without_running_ssh(held):
    d, _, runs = held
    os.mkfifo(os.path.join(d, "fifo"))
    os.symlink(os.path.join(d, "fifo"), os.path.join(d, "link"))
    assert ask(held, os.path.join(d, "fifo")) is None
    assert ask(held, "link") is None            # relative to the held process's cwd, through a link
    assert ask(held, "/dev/zero") is None       # a device ssh would read for ever
    assert runs == []


def test_regular_files_dev_null_and_absent_files_go_to_the_query(held):
    d, _, runs = held
    with open(os.path.join(d, "cfg"), "w") as fh:
        fh.write("Host *\n  BatchMode yes\n")
    assert ask(held, os.path.join(d, "cfg")) == "hostname h\n"
    assert ask(held, "/dev/null") == "hostname h\n"
    assert ask(held, os.path.join(d, "absent")) == "hostname h\n"    # ssh reports it itself
    assert len(runs) == 3
