"""Attach the cgroup programs of ebpf/connect.c, socket.c and stratum.c to an agent cgroup.

Each program is loaded once per BPF object (BCC caches it) with the expected
attach type the kernel requires for cgroup_sock_addr programs, then attached
to the agent's cgroup v2 directory with BPF_F_ALLOW_MULTI: programs other
tools already attached there keep running, ours run for the cgroup and every
descendant (kernel semantics of cgroup BPF inheritance with ALLOW_MULTI).

Programs whose hook file was not compiled in are skipped; a program that is
compiled in but fails to load or attach is an error (the agent would run
unguarded): attach_cgroup_programs() undoes what it attached and raises
EnvironmentProblem.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import EnvironmentProblem

log = logging.getLogger(__name__)

BPF_F_ALLOW_MULTI = 1 << 1

# uapi enum bpf_prog_type / bpf_attach_type values (stable kernel ABI)
PROG_CGROUP_SKB, PROG_CGROUP_SOCK, PROG_SOCK_OPS, PROG_CGROUP_SOCK_ADDR = 8, 9, 13, 18
ATTACH_INET_INGRESS, ATTACH_INET_EGRESS, ATTACH_INET_SOCK_CREATE, ATTACH_SOCK_OPS = 0, 1, 2, 3
ATTACH_INET4_CONNECT, ATTACH_INET6_CONNECT = 10, 11
ATTACH_UDP4_SENDMSG, ATTACH_UDP6_SENDMSG = 14, 15
ATTACH_INET4_POST_BIND, ATTACH_INET6_POST_BIND, ATTACH_INET_SOCK_RELEASE = 12, 13, 34
# kernel >= 6.7; BCC 0.26 has no names for them
ATTACH_UNIX_CONNECT, ATTACH_UNIX_SENDMSG = 49, 50


@dataclass(frozen=True)
class CgroupProgram:
    function: str     # function name in the BPF source
    hook: str         # name shown in `pycontain status` / metrics
    prog_type: int
    attach_type: int
    optional: bool = False   # a kernel without the hook runs without it (doctor says so)


PROGRAMS: tuple[CgroupProgram, ...] = (
    CgroupProgram("pc_connect4", "cgroup:connect4", PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_CONNECT),
    CgroupProgram("pc_connect6", "cgroup:connect6", PROG_CGROUP_SOCK_ADDR, ATTACH_INET6_CONNECT),
    CgroupProgram("pc_sendmsg4", "cgroup:sendmsg4", PROG_CGROUP_SOCK_ADDR, ATTACH_UDP4_SENDMSG),
    CgroupProgram("pc_sendmsg6", "cgroup:sendmsg6", PROG_CGROUP_SOCK_ADDR, ATTACH_UDP6_SENDMSG),
    CgroupProgram("pc_sock_create", "cgroup:sock_create", PROG_CGROUP_SOCK, ATTACH_INET_SOCK_CREATE),
    CgroupProgram("pc_stratum_egress", "cgroup_skb:egress", PROG_CGROUP_SKB, ATTACH_INET_EGRESS),
    CgroupProgram("pc_net_egress", "cgroup_skb:egress_policy", PROG_CGROUP_SKB, ATTACH_INET_EGRESS),
    CgroupProgram("pc_inbound", "cgroup_skb:ingress", PROG_CGROUP_SKB, ATTACH_INET_INGRESS),   # issue 12
    CgroupProgram("pc_tcp_ops", "cgroup:sock_ops", PROG_SOCK_OPS, ATTACH_SOCK_OPS),   # TCP states (connect.c)
    # issue 10 part 4 (ebpf/local.c): which local sockets are the agent's own; unix connect/sendmsg
    CgroupProgram("pc_local_post_bind4", "cgroup:post_bind4", PROG_CGROUP_SOCK, ATTACH_INET4_POST_BIND),
    CgroupProgram("pc_local_post_bind6", "cgroup:post_bind6", PROG_CGROUP_SOCK, ATTACH_INET6_POST_BIND),
    CgroupProgram("pc_local_release", "cgroup:sock_release", PROG_CGROUP_SOCK, ATTACH_INET_SOCK_RELEASE),
    CgroupProgram("pc_unix_connect", "cgroup:connect_unix", PROG_CGROUP_SOCK_ADDR, ATTACH_UNIX_CONNECT, True),
    CgroupProgram("pc_unix_sendmsg", "cgroup:sendmsg_unix", PROG_CGROUP_SOCK_ADDR, ATTACH_UNIX_SENDMSG, True),
)


@dataclass(frozen=True)
class Handle:
    """One attachment: what detach_cgroup_programs() needs to undo it."""

    program: CgroupProgram
    fn: Any           # bcc BPF.Function (holds the program fd)


def _compiled_in(bpf, name: str) -> bool:
    if hasattr(bpf, "pc_has_function"):       # programs from the cache (kernel/prog_cache.py)
        return bool(bpf.pc_has_function(name))
    from bcc import lib
    return bool(lib.bpf_function_start(bpf.module, name.encode()))


def _load(bpf, prog: CgroupProgram):
    try:
        return bpf.load_func(prog.function.encode(), prog.prog_type, attach_type=prog.attach_type)
    except Exception as e:
        raise EnvironmentProblem(f"BPF program {prog.function} ({prog.hook}) failed to load: "
                                 f"{str(e).splitlines()[0] if str(e) else e}") from None


# the programs the verifier takes longest over (~560, 320, 200, 190, 80, 80 ms
# here), loaded first so that two threads sharing the list end together
COSTLIEST_FIRST = ("pc_stratum_egress", "pc_net_egress", "pc_sendmsg6", "pc_connect6", "pc_connect4",
                   "pc_sendmsg4")


def preload_list(bpf) -> deque[CgroupProgram]:
    """The compiled-in cgroup programs, costliest first, for :func:`preload`."""
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    progs = sorted(PROGRAMS, key=lambda p: rank.get(p.function, len(rank)))
    return deque(p for p in progs if _compiled_in(bpf, p.function))


def preload(bpf, pending: deque[CgroupProgram]) -> None:
    """Load (verify) the programs in `pending` now, taking one at a time, so
    several threads can share the list; one the kernel refuses is left for
    hook_status and attach to report."""
    while True:
        try:
            prog = pending.popleft()       # atomic: each program is taken once
        except IndexError:
            return
        try:
            _load(bpf, prog)
        except EnvironmentProblem:
            pass


def _load_optional(bpf, prog: CgroupProgram, status: dict[str, str]):
    """The loaded program, or None for an optional one this kernel lacks."""
    try:
        return _load(bpf, prog)
    except EnvironmentProblem as e:
        if not prog.optional:
            raise
        status[prog.hook] = f"unavailable: {e.message} (kernel < 6.7?)"
        return None


def _loadable(bpf, status: dict[str, str]) -> Iterator[tuple[CgroupProgram, Any]]:
    """(program, loaded function) for each compiled-in program this kernel
    takes; status says why any other is unavailable."""
    for prog in PROGRAMS:
        if not _compiled_in(bpf, prog.function):
            status[prog.hook] = "unavailable: not compiled in"
            continue
        fn = _load_optional(bpf, prog, status)
        if fn is not None:
            yield prog, fn


def attach_cgroup_programs(bpf, cgroup_fd: int) -> list[Handle]:
    """Attach every compiled-in cgroup program to the cgroup open at `cgroup_fd`."""
    from bcc import BPF

    handles: list[Handle] = []
    status = _status(bpf)
    try:
        for prog, fn in _loadable(bpf, status):
            try:
                BPF.attach_func(fn, cgroup_fd, prog.attach_type, BPF_F_ALLOW_MULTI)
            except Exception as e:
                raise EnvironmentProblem(
                    f"cannot attach {prog.hook} to the agent cgroup: {e}",
                    hint="another tool may hold this cgroup hook without BPF_F_ALLOW_MULTI") from None
            handles.append(Handle(prog, fn))
            status[prog.hook] = "attached"
    except EnvironmentProblem as e:
        detach_cgroup_programs(bpf, cgroup_fd, handles)
        for prog in PROGRAMS:
            if status.get(prog.hook) != "unavailable: not compiled in":
                status.setdefault(prog.hook, f"unavailable: {e.message}")
        raise
    return handles


@dataclass
class CgroupLinks:
    """Cgroup attachments as BPF links (BPF_LINK_CREATE on the cgroup: a link
    coexists with other tools' BPF_F_ALLOW_MULTI programs).

    Pinned in bpffs (daemon mode, `pins` set) they hold with no process:
    close() leaves them, unpin() detaches on purpose. Unpinned they go away
    with their fds, so a controller that dies leaves nothing behind."""

    pins: Any                      # kernel/pins.PinDir, or None: not pinned
    links: list[tuple[str, int]]   # (pin name, link fd)

    def close(self) -> None:
        for _name, fd in self.links:
            try:
                os.close(fd)
            except OSError:
                pass
        self.links = []

    def unpin(self) -> None:
        if self.pins is not None:
            for name, _fd in self.links:
                self.pins.unpin(name)
        self.close()


def link_cgroup_programs(bpf, cgroup_fd: int, pin_dir=None, prefix: str = "cg") -> CgroupLinks:
    """Attach every compiled-in cgroup program to the cgroup open at
    `cgroup_fd` through BPF links, pinned under `pin_dir` when given: the
    daemon's agent cgroups, and (issue 10) the ancestor of the selected
    cgroups that covers cgroups created later."""
    from .pins import link_create

    out = CgroupLinks(pin_dir, [])
    status = _status(bpf)
    try:
        for prog, fn in _loadable(bpf, status):
            try:
                fd = link_create(fn.fd, cgroup_fd, prog.attach_type)
            except OSError as e:
                raise EnvironmentProblem(f"cannot attach {prog.hook} to the cgroup: {e.strerror}",
                                         hint="another tool may hold this cgroup hook without "
                                              "BPF_F_ALLOW_MULTI") from None
            name = f"{prefix}-{prog.function}"
            out.links.append((name, fd))
            if pin_dir is not None:
                pin_dir.pin(fd, name)
            status[prog.hook] = "attached"
    except (EnvironmentProblem, OSError):
        out.unpin()
        raise
    return out


def detach_cgroup_programs(bpf, cgroup_fd: int, handles: list[Handle]) -> None:
    """Detach exactly our programs (by program fd: others attached with
    ALLOW_MULTI stay). A cgroup that is already gone took them with it."""
    from bcc import BPF

    for h in reversed(handles or []):
        try:
            BPF.detach_func(h.fn, cgroup_fd, h.program.attach_type)
        except Exception as e:
            log.debug("detach %s: %s", h.program.hook, e)


def hook_status(bpf) -> dict[str, str]:
    """{hook: "attached" | "unavailable: why"} for the cgroup programs; a
    program not attached yet is loaded (verified) here so that status tells
    the truth before the first agent starts."""
    status = _status(bpf)
    for prog in PROGRAMS:
        if prog.hook in status:
            continue
        if not _compiled_in(bpf, prog.function):
            status[prog.hook] = "unavailable: not compiled in"
            continue
        try:
            _load(bpf, prog)
            status[prog.hook] = "attached (per agent cgroup)"
        except EnvironmentProblem as e:
            status[prog.hook] = f"unavailable: {e.message}"
    return dict(status)


def _status(bpf) -> dict[str, str]:
    st = getattr(bpf, "_pc_cgroup_status", None)
    if st is None:
        st = {}
        try:
            bpf._pc_cgroup_status = st
        except AttributeError:   # pragma: no cover - BCC objects take attributes
            pass
    return st
