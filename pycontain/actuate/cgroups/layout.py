"""Which cgroup hierarchies this host has, and where this process sits in them.

Two layouts are supported:

* ``v2``: one cgroup2 hierarchy (usually at /sys/fs/cgroup) holding the cpu,
  memory and pids controllers and the BPF attach points.
* ``hybrid``: v1 controller hierarchies (/sys/fs/cgroup/<ctrl>) plus a cgroup2
  hierarchy without controllers (usually /sys/fs/cgroup/unified). The v2 side
  still gives the BPF hooks, cgroup.kill and cgroup.freeze; the budgets live in
  v1.

A host without any cgroup2 mount cannot attach the BPF cgroup hooks, so it is
refused with :class:`EnvironmentProblem`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...core.errors import EnvironmentProblem

# the v1 controllers pycontain uses on hybrid hosts
V1_WANTED = ("cpu", "cpuacct", "memory", "pids", "freezer")


@dataclass(frozen=True)
class Mount:
    point: str        # where it is mounted
    root: str         # which part of the hierarchy the mount shows (field 4)


@dataclass(frozen=True)
class CgroupLayout:
    kind: str                                   # "v2" | "hybrid"
    unified: str                                # cgroup2 mount point
    v1: dict[str, str] = field(default_factory=dict)   # controller -> mount point (only V1_WANTED)
    unified_root: str = "/"
    v1_roots: dict[str, str] = field(default_factory=dict)
    proc_root: str = "/proc"
    v2_controllers: frozenset[str] = frozenset()       # cgroup.controllers at the unified mount

    # ---- where a process sits -------------------------------------------------

    def proc_cgroups(self, pid: int | str = "self") -> dict[str, str]:
        """``/proc/<pid>/cgroup`` as {controller: path}; the v2 line is under key ""."""
        return parse_proc_cgroup(_read(f"{self.proc_root}/{pid}/cgroup"))

    def own_v2(self, pid: int | str = "self") -> str:
        """Absolute directory of `pid`'s cgroup2 cgroup."""
        rel = self.proc_cgroups(pid).get("")
        if rel is None:
            raise EnvironmentProblem(f"{self.proc_root}/{pid}/cgroup has no cgroup2 line")
        return _join(self.unified, self.unified_root, rel)

    def own_v1(self, controller: str, pid: int | str = "self") -> str | None:
        """Absolute directory of `pid`'s cgroup in a v1 controller hierarchy."""
        mount = self.v1.get(controller)
        rel = self.proc_cgroups(pid).get(controller)
        if mount is None or rel is None:
            return None
        return _join(mount, self.v1_roots.get(controller, "/"), rel)

    def v1_mounts(self) -> dict[str, list[str]]:
        """mount point -> controllers mounted there (cpu and cpuacct are often co-mounted)."""
        out: dict[str, list[str]] = {}
        for ctrl, point in self.v1.items():
            out.setdefault(point, []).append(ctrl)
        return out


def detect_layout(proc_root: str = "/proc", mounts_file: str = "/proc/self/mountinfo") -> CgroupLayout:
    try:
        text = _read(mounts_file)
    except OSError as e:
        raise EnvironmentProblem(f"cannot read {mounts_file}: {e.strerror}") from e
    unified: Mount | None = None
    v1: dict[str, Mount] = {}
    for line in text.splitlines():
        m = _parse_mountinfo_line(line)
        if m is None:
            continue
        fstype, point, root, superopts = m
        if fstype == "cgroup2" and unified is None:
            unified = Mount(point, root)
        elif fstype == "cgroup":
            for opt in superopts.split(","):
                if opt in V1_WANTED and opt not in v1:
                    v1[opt] = Mount(point, root)
    if unified is None:
        raise EnvironmentProblem(
            "no cgroup2 hierarchy is mounted (pure cgroup v1 host)",
            "pycontain attaches its BPF hooks to cgroup2: boot with systemd.unified_cgroup_hierarchy=1, "
            "or mount one: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified")
    try:
        ctrls = frozenset(_read(os.path.join(unified.point, "cgroup.controllers")).split())
    except OSError:
        ctrls = frozenset()
    return CgroupLayout(
        kind="hybrid" if v1 else "v2",
        unified=unified.point,
        v1={c: m.point for c, m in v1.items()},
        unified_root=unified.root,
        v1_roots={c: m.root for c, m in v1.items()},
        proc_root=proc_root,
        v2_controllers=ctrls,
    )


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``4:memory:/a/b`` lines -> {"memory": "/a/b"}; ``0::/x`` -> {"": "/x"}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if ctrls == "":
            out[""] = path
            continue
        for c in ctrls.split(","):
            out.setdefault(c, path)
    return out


def _parse_mountinfo_line(line: str) -> tuple[str, str, str, str] | None:
    # id parent maj:min root point opts [optional...] - fstype source superopts
    left, sep, right = line.partition(" - ")
    if not sep:
        return None
    lf, rf = left.split(), right.split()
    if len(lf) < 5 or len(rf) < 3:
        return None
    return rf[0], _unescape(lf[4]), _unescape(lf[3]), rf[2]


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _join(mount: str, mount_root: str, rel: str) -> str:
    """A /proc/<pid>/cgroup path is relative to the hierarchy (or cgroup
    namespace) root; a mount may show only a subtree of it (root field)."""
    if mount_root not in ("", "/") and (rel == mount_root or rel.startswith(mount_root.rstrip("/") + "/")):
        rel = rel[len(mount_root.rstrip("/")):]
    rel = rel.lstrip("/")
    return os.path.normpath(os.path.join(mount, rel)) if rel else mount


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()
