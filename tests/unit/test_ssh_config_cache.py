"""The `ssh -G` answer cache (issue 11 part 4, hold time of ssh): the
fingerprint changes with every file, directory entry, permission and
variable the answer depends on, and a configuration it cannot capture is
never cached."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from pycontain.actuate import ssh_config, ssh_config_cache
from pycontain.actuate.ssh_config_cache import AnswerCache, fingerprint

FUTURE = time.time_ns() + 10**15      # "now" for tests: no file counts as just changed
IDS = (0, 0, [0])
PW = ("root", "/root", "/bin/sh")


@pytest.fixture
def tree():
    """A quiet directory (not /tmp, whose entries other tests churn: the
    fingerprint includes every directory on the way)."""
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="pc-sshcache-")
    home = os.path.join(d, "home")
    os.makedirs(os.path.join(home, ".ssh"))
    yield d, home
    shutil.rmtree(d)


def write(path: str, text: str, mode: int = 0o600) -> None:
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def fp(cfg: str, home: str, now: int = FUTURE, query: list[str] | None = None) -> bytes | None:
    q = query or ["-G", f"-F{cfg}", "--", "far.example"]
    return fingerprint(q, IDS, {b"HOME": home.encode()}, "/", PW, "/bin/sh", now_ns=now)


def config_with_include(d: str, home: str, included: str = "Match host 198.51.100.77\n  RemoteForward 2222 l:22\n"):
    cfg = os.path.join(d, "cfg")
    write(cfg, "Include tunnel.conf\nInclude ~/conf.d/*.conf\nHost *\n  BatchMode yes\n")
    write(os.path.join(home, ".ssh", "tunnel.conf"), included)
    os.makedirs(os.path.join(home, "conf.d"), exist_ok=True)
    write(os.path.join(home, "conf.d", "a.conf"), "Host a\n  Port 2200\n")
    return cfg


def test_unchanged_configuration_has_a_stable_fingerprint(tree):
    d, home = tree
    cfg = config_with_include(d, home)
    assert fp(cfg, home) is not None and fp(cfg, home) == fp(cfg, home)


def test_same_size_edit_of_an_included_file_with_mtime_restored_changes_it(tree):
    d, home = tree
    cfg = config_with_include(d, home)
    inc = os.path.join(home, ".ssh", "tunnel.conf")       # relative Include: ~/.ssh for a user file
    before, st = fp(cfg, home), os.stat(inc)
    write(inc, "Match host 198.51.100.10\n  RemoteForward 2222 l:22\n")   # the Match now names the peer
    os.utime(inc, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(inc).st_size == st.st_size
    assert fp(cfg, home) != before


@pytest.mark.parametrize("change", ["new glob file", "chmod", "dir swap", "home", "env"])
def test_what_ssh_would_read_differently_changes_it(tree, change):
    d, home = tree
    cfg = config_with_include(d, home)
    before = fp(cfg, home)
    if change == "new glob file":
        write(os.path.join(home, "conf.d", "z.conf"), "Host *\n  RemoteForward 1 l:2\n")
    elif change == "chmod":
        os.chmod(os.path.join(home, "conf.d", "a.conf"), 0o000)
    elif change == "dir swap":                              # renamed away and back: same inode, new ctime
        os.rename(os.path.join(home, "conf.d"), os.path.join(home, "x"))
        os.rename(os.path.join(home, "x"), os.path.join(home, "conf.d"))
    after = fp(cfg, home + "/" if change == "home" else home)
    if change == "env":
        after = fingerprint(["-G", f"-F{cfg}", "--", "far.example"], IDS,
                            {b"HOME": home.encode(), b"LC_X": b"1"}, "/", PW, "/bin/sh", now_ns=FUTURE)
    assert after is not None and after != before


@pytest.mark.parametrize("text", [
    "Match exec \"true\"\n  RemoteForward 1 l:2\n",
    "Match localnetwork 10.0.0.0/8\n  RemoteForward 1 l:2\n",
    "CanonicalizeHostname yes\n",
    "Include ~/.ssh/%h.conf\n",
    "Include ${X}/a\n",
    "Include /a/*/b\n",
    "Include ~other/a\n",
    "\"Include\" a\n",
    "Include /proc/self/environ\n",          # the controller's, not the query's
])
def test_configurations_the_fingerprint_cannot_capture_are_not_cached(tree, text):
    d, home = tree
    cfg = os.path.join(d, "cfg")
    write(cfg, text)
    assert fp(cfg, home) is None


def test_include_loops_fifos_missing_home_and_fresh_files_are_not_cached(tree):
    d, home = tree
    loop = os.path.join(d, "loop")
    write(loop, f"Include {loop}\n")
    assert fp(loop, home) is None
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    cfg = os.path.join(d, "cfg")
    write(cfg, f"Include {fifo}\n")
    assert fp(cfg, home) is None
    write(cfg, "Include ~/x\n")
    assert fingerprint(["-G", f"-F{cfg}", "--", "h"], IDS, {}, "/", PW, "/bin/sh", now_ns=FUTURE) is None
    write(cfg, "Host *\n")
    assert fp(cfg, home, now=time.time_ns()) is None         # just written: two edits could share a ctime
    assert fp(cfg, home) is not None


def test_default_roots_are_the_users_and_the_system_file():
    roots = ssh_config_cache.config_roots(["-G", "--", "h"], "/home/u", "/w")
    assert roots == [(b"/home/u/.ssh/config", True), (b"/etc/ssh/ssh_config", False)]
    assert ssh_config_cache.config_roots(["-G", "-Fa/b", "--", "h"], "/home/u", "/w") == [(b"/w/a/b", True)]
    assert ssh_config_cache.config_roots(["-G", "-Fnone", "--", "h"], "/home/u", "/w") == []


def test_lru_is_bounded():
    c = AnswerCache(entries=2)
    for k in (b"a", b"b", b"c"):
        c.put(k, k.decode())
    assert c.get(b"a") is None and c.get(b"c") == "c"
    c.put(None, "x")
    assert c.get(None) is None


def test_effective_config_reuses_an_answer_until_an_included_file_changes(tree, monkeypatch):
    d, home = tree
    cfg = config_with_include(d, home)
    proc = os.path.join(d, "proc", "7")
    os.makedirs(proc)
    write(os.path.join(proc, "status"), "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t0\n")
    with open(os.path.join(proc, "environ"), "wb") as fh:
        fh.write(b"HOME=" + home.encode() + b"\0")
    os.symlink("/", os.path.join(proc, "cwd"))
    os.symlink("/proc/self/ns", os.path.join(proc, "ns"))
    runs = []
    monkeypatch.setattr(ssh_config_cache, "RACY_NS", -10**15)
    monkeypatch.setattr(ssh_config, "ANSWERS", AnswerCache())
    monkeypatch.setattr(ssh_config, "_run_query", lambda *a: runs.append(a) or f"hostname x\nrun {len(runs)}\n")
    query = ["-G", f"-F{cfg}", "--", "far.example"]
    proc_root = os.path.dirname(proc)
    assert ssh_config.effective_config(7, query, proc_root) == "hostname x\nrun 1\n"
    assert ssh_config.effective_config(7, query, proc_root) == "hostname x\nrun 1\n"   # reused
    write(os.path.join(home, ".ssh", "tunnel.conf"), "Host *\n  RemoteForward 2222 l:22\n")
    assert ssh_config.effective_config(7, query, proc_root) == "hostname x\nrun 2\n"   # asked again
    assert len(runs) == 2
