"""exec.trusted for a held #! script (issue 11 part 5): the script's path as
the interpreter will open it, every directory on the way root-owned and not
writable by others, no step through /proc, the file root-owned, old and under
a trusted prefix. Real system paths for the admitted cases (their owners are
root), temp dirs for the refused ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from pycontain.actuate.held import own_mounts
from pycontain.actuate.held_script import resolve, script_verdict
from pycontain.core.engine import Engine
from pycontain.core.events import EventType, ExecEvent, Flag, Header, Verdict
from pycontain.core.policy import builtin_policy

NOW = time.time()
SH = os.path.realpath("/bin/sh").encode()


def held(filename: bytes, flags: Flag = Flag.HELD | Flag.SCRIPT, pid: int = 7) -> ExecEvent:
    h = Header(type=EventType.EXEC, verdict=Verdict.ALLOW, flags=flags, rule_id=0, pid=pid, tid=pid, ppid=1, uid=0,
               agent_id=7, ts_ns=1, start_ns=1, cgroup_id=1, comm=b"x")
    return ExecEvent(h=h, filename=filename, argv=(b"/bin/sh", filename), argc=2)


@pytest.fixture
def proc(tmp_path):
    """A fake /proc/7 whose cwd is /usr/bin."""
    d = tmp_path / "7"
    d.mkdir()
    (d / "cwd").symlink_to("/usr/bin")
    (d / "root").symlink_to("/")
    (d / "ns").symlink_to("/proc/self/ns")
    return str(tmp_path)


def test_links_are_followed_with_their_directories_checked():
    real, st = resolve(b"/bin/../bin/sh", os.stat("/proc").st_dev)
    assert real == SH and st.st_uid == 0


def test_a_root_owned_script_under_a_trusted_prefix_is_admitted(proc):
    assert script_verdict(held(b"/bin/sh"), ("/usr", "/bin"), NOW, proc) == ""
    assert script_verdict(held(b"./sh"), ("/usr",), NOW, proc) == ""            # relative to the cwd


@pytest.mark.parametrize("filename, trusted, since, words", [
    (b"/bin/sh", ("/opt/conda",), NOW, "not under an exec.trusted path"),
    (b"/bin/sh", ("/usr",), 0, "modified since the agent started"),
    (b"/dev/fd/0", ("/usr", "/dev", "/proc"), NOW, "/proc"),           # an fd names the controller's files here
    (b"/usr/bin", ("/usr",), NOW, "not a regular file"),
    (b"/nonexistent/x.sh", ("/",), NOW, "not checkable"),
])
def test_refused_scripts(proc, filename, trusted, since, words):
    assert words in script_verdict(held(filename), trusted, since, proc)


def test_a_script_in_a_directory_others_can_write_is_refused(proc, tmp_path):
    s = tmp_path / "s.sh"
    s.write_text("#!/bin/sh\n")
    why = script_verdict(held(str(s).encode()), ("/",), NOW + 3600, proc)
    assert "writable by others than root" in why                        # /tmp is 1777


def test_a_link_through_a_directory_others_can_write_is_refused(proc, tmp_path):
    link = tmp_path / "l"
    link.symlink_to("/tmp")
    assert "writable by others than root" in script_verdict(held(str(link).encode() + b"/x"), ("/",), NOW, proc)


def test_a_truncated_path_and_an_unknown_start_fail_closed(proc):
    assert "longer than the kernel reads" in script_verdict(
        held(b"/bin/sh", flags=Flag.HELD | Flag.SCRIPT | Flag.FILENAME_TRUNCATED), ("/usr",), NOW, proc)
    assert "unknown" in script_verdict(held(b"/bin/sh"), ("/usr",), None, proc)


def test_engine_kills_a_held_script_exec_trusted_refused():
    e = Engine(builtin_policy("strict"))
    e.add_agent(7, "a")
    out = e.on_event(ExecEvent(**{**held(b"/tmp/s.sh").__dict__, "untrusted_script": "untrusted #! script: x"}), 1.0)
    assert [(d.rule, d.action.value, d.pid) for d in out][:1] == [("exec.trusted", "kill-process", 7)], out
    assert e.on_event(held(b"/usr/bin/x.sh", pid=8), 1.0) == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1)")
def test_a_process_with_its_own_user_and_mount_namespace_is_refused():
    """unshare -Urm: it may mount over the script's path after the check."""
    p = subprocess.Popen(["unshare", "-Urm", "sh", "-c", "echo ready; exec sleep 30"], stdout=subprocess.PIPE)
    try:
        if p.stdout.readline() != b"ready\n":
            pytest.skip("unprivileged user namespaces are not allowed here")
        assert own_mounts(p.pid, "/proc")
        assert not own_mounts(os.getpid(), "/proc")
        assert "own mount namespace" in script_verdict(held(b"/bin/sh", pid=p.pid), ("/usr",), NOW)
    finally:
        p.kill()
        p.wait()
