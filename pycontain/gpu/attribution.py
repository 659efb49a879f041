"""Which agent, and which program, each GPU process belongs to.

NVML reports pids in the host pid namespace (pycontain must run there:
`hostPID: true` on Kubernetes). A pid belongs to an agent when its cgroup
(from /proc/<pid>/cgroup) is the agent's cgroup or below it, in the v2
hierarchy or, on hybrid hosts, in a v1 hierarchy.
"""

from __future__ import annotations

import os
import stat

from ..core.gpu_rules import AttributedGpuProcess
from ..core.samples import GpuSample


def _proc_cgroups(pid: int, proc_root: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        # a cgroup path is any bytes (a delegated agent names its own
        # sub-cgroups): decoded as os.fsdecode would, never raising
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                hid, ctrls, path = line.rstrip("\n").split(":", 2)
                if hid == "0":
                    out[""] = path
                for c in ctrls.split(","):
                    if c:
                        out[c] = path
    except OSError:
        pass
    return out


def _rel(path: str, mount: str) -> str:
    return "/" + os.path.relpath(path, mount).lstrip(".").strip("/") if path.startswith(mount) else path


def _under(path: str, base: str) -> bool:
    base = base.rstrip("/") or "/"
    return path == base or path.startswith(base + "/") or base == "/"


def agent_of(pid: int, cgroups: dict, proc_root: str = "/proc", v2_mount: str | None = None,
             v1_mounts: dict[str, str] | None = None) -> str | None:
    mine = _proc_cgroups(pid, proc_root)
    if not mine:
        return None
    for name, cg in cgroups.items():
        v2 = getattr(cg, "v2_path", None)
        if v2 and "" in mine and v2_mount and _under(mine[""], _rel(v2, v2_mount)) and _rel(v2, v2_mount) != "/":
            return name
        for ctrl, path in (getattr(cg, "v1_paths", None) or {}).items():
            mount = (v1_mounts or {}).get(ctrl)
            if mount and ctrl in mine and _rel(path, mount) != "/" and _under(mine[ctrl], _rel(path, mount)):
                return name
    return None


def _exe(pid: int, proc_root: str) -> tuple[bytes, tuple[bytes, ...]]:
    try:
        exe = os.readlink(os.fsencode(f"{proc_root}/{pid}/exe"))   # bytes: the agent names its files
    except OSError:
        exe = b""
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as fh:
            argv = tuple(a for a in fh.read(4096).split(b"\0") if a)
    except OSError:
        argv = ()
    return exe, argv


def attribute(sample: GpuSample, cgroups: dict, lookup=None, proc_root: str = "/proc",
              layout=None, exited=None, unattributed: list | None = None) -> list[AttributedGpuProcess]:
    """GPU processes of agents, with their exec record; others are dropped.

    `exited(pid)`: the record of a process that exited lately (the engine's
    ProcessTable.exited), for pids /proc no longer has. Such a pid that no
    record names is appended to `unattributed` (it may have been an agent's:
    the caller counts it rather than letting it vanish)."""
    if layout is None and cgroups:
        from ..actuate.cgroups import detect_layout
        layout = detect_layout(proc_root=proc_root) if proc_root == "/proc" else None
    v2_mount = getattr(layout, "unified", None)
    v1_mounts = getattr(layout, "v1", None)
    out = []
    for p in sample.processes:
        agent = agent_of(p.pid, cgroups, proc_root, v2_mount, v1_mounts)
        info = lookup(p.pid) if lookup else None
        if agent is None and not os.path.exists(f"{proc_root}/{p.pid}"):
            agent, info = _gone_agent(p.pid, cgroups, info, exited)
            if agent is None:
                if unattributed is not None:
                    unattributed.append(p)
                continue
        if agent is None:
            continue
        out.append(_attributed(p, agent, info, proc_root))
    return out


def _gone_agent(pid: int, cgroups: dict, info, exited) -> tuple[str | None, object]:
    """(agent, record) of a pid /proc no longer has: from the engine's record
    of it, live (its exit not yet read) or lately exited. The kernel named
    its agent from its cgroup while it ran; an agent no longer contained
    gets nothing."""
    if info is None and exited is not None:
        info = exited(pid)
    if info is None or info.agent not in cgroups:
        return None, None
    return info.agent, info


def _attributed(p, agent: str, info, proc_root: str) -> AttributedGpuProcess:
    exe, cmdline = _exe(p.pid, proc_root)
    named, argv = exe, cmdline
    start_ns, unapproved, exec_ts = None, None, 0
    if info is not None:
        start_ns, unapproved, exec_ts = info.start_ns, info.unapproved_connect_ns, info.exec_ts_ns
        # the kernel's exec record may not have been processed yet (the
        # record is still the fork copy of the parent): then the image
        # running now, from /proc, is what uses the GPU
        if not exe or _resolved(info.filename) == exe:
            named, argv = info.filename, info.argv
    # judged: the image the kernel runs, never the agent's spelling of it
    # (`/usr/bin/../../tmp/m`, or a link of its own named like an allowed
    # program); a process gone from /proc: its record's file, resolved now
    image = exe or _resolved(named)
    return AttributedGpuProcess(agent=agent, pid=p.pid, start_ns=start_ns, device=p.device,
                                used_memory_bytes=p.used_memory_bytes, sm_util=p.sm_util,
                                filename=image, argv=argv, unapproved_connect_ns=unapproved,
                                exec_ts_ns=exec_ts, aliases=admin_links(named, image))


def _resolved(filename: bytes) -> bytes:
    """The file an absolute exec name leads to; b"" for a relative one (its
    working directory is not known here: judged as no allowed program)."""
    return os.path.realpath(filename) if filename.startswith(b"/") else b""


# the kernel follows at most this many links in one lookup (MAXSYMLINKS)
LINK_HOPS = 40


def admin_links(named: bytes, image: bytes) -> tuple[bytes, ...]:
    """The links on the way from `named` (what was exec'd) to `image` that
    an administrator made: `/usr/bin/python3` -> `python3.11` keeps the name
    a policy allows. A link the agent could have made (not root's, or in a
    directory others may write) lends no name; an agent-made link to an
    admin link (a venv's python3 -> /usr/bin/python3) still reaches it."""
    if not image or not named.startswith(b"/"):
        return ()
    out: list[bytes] = []
    path = _in_real_dir(named)
    for _ in range(LINK_HOPS):
        try:
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode):
                break
            if _admin_owned(path, st):
                out.append(path)
            target = os.readlink(path)
        except OSError:
            return ()
        path = _in_real_dir(os.path.join(os.path.dirname(path), target))
    # only links that really lead to the running image name it
    return tuple(out) if path == image else ()


def _in_real_dir(path: bytes) -> bytes:
    """`path` with its directory resolved as the kernel would, the last
    component (perhaps a link) kept."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _admin_owned(path: bytes, st: os.stat_result) -> bool:
    try:
        d = os.stat(os.path.dirname(path))
    except OSError:
        return False
    return st.st_uid == 0 and d.st_uid == 0 and not d.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
