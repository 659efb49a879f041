"""A fake cgroupfs in a temporary directory, behaving like the kernel where
pycontain depends on it: new cgroup dirs get their control files, child
cgroup.controllers follow the parent's cgroup.subtree_control, the 'no
internal processes' rule refuses subtree_control writes (EBUSY), and v1
memory.memsw.limit_in_bytes must stay >= memory.limit_in_bytes (EINVAL).

Other test_cgroups_* files import FakeHost from here; the tests below check
the fake itself against the rules it claims to follow.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pycontain.actuate.cgroups import fs as cgfs

V1_UNLIMITED = "9223372036854771712"

V2_CORE = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
           "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
           "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"}
V2_CTRL = {
    "cpu": {"cpu.max": "max 100000\n"},
    "memory": {"memory.max": "max\n", "memory.high": "max\n", "memory.current": "0\n",
               "memory.swap.max": "max\n", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
}
V1_CTRL = {
    "cpu": {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"},
    "cpuacct": {"cpuacct.usage": "0\n"},
    "memory": {"memory.limit_in_bytes": V1_UNLIMITED, "memory.memsw.limit_in_bytes": V1_UNLIMITED,
               "memory.soft_limit_in_bytes": V1_UNLIMITED, "memory.usage_in_bytes": "0\n",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
    "freezer": {"freezer.state": "THAWED\n"},
}


def _put(d: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (d / name).write_text(text)


class FakeHost:
    """kind "v2": cgroup2 at <tmp>/sys/fs/cgroup with cpu memory pids.
    kind "hybrid": v1 cpu,cpuacct (co-mounted), memory, pids, freezer plus a
    controller-less cgroup2 at <tmp>/sys/fs/cgroup/unified."""

    def __init__(self, tmp: Path, monkeypatch, kind: str = "v2", own_v2: str = "/user.slice/session-1.scope",
                 own_v1: dict[str, str] | None = None):
        self.tmp, self.kind = tmp, kind
        self.proc = tmp / "proc"
        (self.proc / "self").mkdir(parents=True)
        base = tmp / "sys/fs/cgroup"
        lines = []
        if kind == "v2":
            self.unified = base
            self.v1: dict[str, Path] = {}
            self.unified.mkdir(parents=True)
            _put(self.unified, V2_CORE)
            (self.unified / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
            lines.append(f"30 23 0:26 / {self.unified} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate")
        else:
            self.unified = base / "unified"
            self.unified.mkdir(parents=True)
            _put(self.unified, V2_CORE)
            (self.unified / "cgroup.controllers").write_text("")
            lines.append(f"31 23 0:28 / {base} rw - tmpfs tmpfs rw,mode=755")
            self.v1 = {}
            mounts = {"cpu,cpuacct": ("cpu", "cpuacct"), "memory": ("memory",), "pids": ("pids",),
                      "freezer": ("freezer",), "name=systemd": ()}
            for i, (opt, ctrls) in enumerate(mounts.items()):
                point = base / opt.replace("name=", "")
                point.mkdir()
                (point / "cgroup.procs").write_text("")
                for c in ctrls:
                    self.v1[c] = point
                    _put(point, V1_CTRL[c])
                lines.append(f"{32 + i} 31 0:{29 + i} / {point} rw,relatime - cgroup cgroup rw,{opt}")
            lines.append(f"40 31 0:38 / {self.unified} rw,relatime - cgroup2 cgroup2 rw")
        self.mountinfo = tmp / "mountinfo"
        self.mountinfo.write_text("\n".join(lines) + "\n")
        self.own_v1 = own_v1 or {"memory": "/process_api/abc"}
        self.own_v2 = own_v2
        self.write_proc_cgroup("self", own_v2, self.own_v1)
        # pycontain's own cgroups exist and hold pycontain (pid 4242)
        self.make_cgroup(own_v2, procs=[4242])
        for c, rel in self.own_v1.items():
            if c in self.v1:
                self.mkdirs(self.v1[c], rel)
        monkeypatch.setattr(cgfs, "make_dir", self._make_dir)
        monkeypatch.setattr(cgfs, "remove_dir", self._remove_dir)
        real_write = cgfs.write
        monkeypatch.setattr(cgfs, "write", lambda p, v: self._write(real_write, p, v))
        self.writes: list[tuple[str, str]] = []

    # ---- setup helpers ---------------------------------------------------------------

    def layout(self):
        from pycontain.actuate.cgroups import detect_layout
        return detect_layout(proc_root=str(self.proc), mounts_file=str(self.mountinfo))

    def write_proc_cgroup(self, pid: int | str, v2: str, v1: dict[str, str] | None = None) -> None:
        d = self.proc / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        if self.kind == "hybrid":
            v1 = v1 or {}
            lines += ["9:name=systemd:/", f"8:pids:{v1.get('pids', '/')}",
                      f"6:freezer:{v1.get('freezer', '/')}", f"4:memory:{v1.get('memory', '/')}",
                      f"2:cpu,cpuacct:{v1.get('cpu', '/')}"]
        lines.append(f"0::{v2}")
        (d / "cgroup").write_text("\n".join(lines) + "\n")

    def mkdirs(self, mount: Path, rel: str) -> Path:
        d = mount
        for part in [p for p in rel.split("/") if p]:
            d = d / part
            if not d.exists():
                self._make_dir(str(d))
        return d

    def make_cgroup(self, rel: str, procs: list[int] = (), subtree: str = "") -> Path:
        d = self.mkdirs(self.unified, rel)
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in procs))
        if subtree:
            (d / "cgroup.subtree_control").write_text(subtree + "\n")
        return d

    # ---- the fake kernel -------------------------------------------------------------------

    def _mount_of(self, path: Path) -> tuple[str, Path]:
        for _c, m in self.v1.items():
            if path == m or m in path.parents:
                return "v1", m
        return "v2", self.unified

    def _make_dir(self, path: str) -> None:
        p = Path(path)
        os.mkdir(p)
        kind, mount = self._mount_of(p)
        if kind == "v2":
            _put(p, V2_CORE)
            ctrls = (p.parent / "cgroup.subtree_control").read_text().split()
            (p / "cgroup.controllers").write_text(" ".join(ctrls) + "\n")
            for c in ctrls:
                _put(p, V2_CTRL.get(c, {}))
        else:
            (p / "cgroup.procs").write_text("")
            for c, m in self.v1.items():
                if m == mount:
                    _put(p, V1_CTRL[c])

    def _remove_dir(self, path: str) -> None:
        p = Path(path)
        for f in p.iterdir():
            if f.is_file():
                f.unlink()
        os.rmdir(p)     # a child dir still there -> ENOTEMPTY, as rmdir of a cgroup with children

    def _write(self, real_write, path: str, value) -> None:
        p, text = Path(path), str(value)
        self.writes.append((str(p.relative_to(self.tmp)), text))
        if not p.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        if p.name == "cgroup.subtree_control":
            if p.parent != self.unified and (p.parent / "cgroup.procs").read_text().strip():
                raise OSError(errno.EBUSY, "Device or resource busy", path)
            have = set((p.parent / "cgroup.controllers").read_text().split())
            cur = (p.read_text()).split()
            for tok in text.split():
                c = tok[1:]
                if c not in have:
                    raise OSError(errno.ENOENT, "No such file or directory", path)
                if tok[0] == "+" and c not in cur:
                    cur.append(c)
                elif tok[0] == "-" and c in cur:
                    cur.remove(c)
            p.write_text(" ".join(cur) + "\n")
            return
        if p.name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            big = lambda s: int(V1_UNLIMITED) if int(s) < 0 else int(s)  # noqa: E731
            other = p.parent / ("memory.memsw.limit_in_bytes" if p.name == "memory.limit_in_bytes"
                                else "memory.limit_in_bytes")
            mine, theirs = big(text), big(other.read_text())
            if (p.name == "memory.limit_in_bytes" and mine > theirs) or \
               (p.name != "memory.limit_in_bytes" and mine < theirs):
                raise OSError(errno.EINVAL, "Invalid argument", path)
            p.write_text(str(mine) + "\n")
            return
        real_write(path, value)

    def read(self, path: Path | str) -> str:
        return Path(path).read_text().strip()


@pytest.fixture
def v2host(tmp_path, monkeypatch):
    return FakeHost(tmp_path, monkeypatch, "v2")


@pytest.fixture
def hybrid(tmp_path, monkeypatch):
    return FakeHost(tmp_path, monkeypatch, "hybrid")


# ---- the fake follows the kernel rules it claims to ---------------------------------------

def test_fake_refuses_subtree_control_with_processes(v2host):
    own = v2host.unified / v2host.own_v2.lstrip("/")
    with pytest.raises(OSError) as e:
        cgfs.write(str(own / "cgroup.subtree_control"), "+cpu")
    assert e.value.errno == errno.EBUSY


def test_fake_child_controllers_follow_parent_subtree_control(v2host):
    d = v2host.make_cgroup("/empty", subtree="cpu pids")
    cgfs.make_dir(str(d / "kid"))
    assert v2host.read(d / "kid/cgroup.controllers") == "cpu pids"
    assert (d / "kid/cpu.max").exists() and not (d / "kid/memory.max").exists()
