"""Least privilege for agents that `pycontain run` starts (issue 10).

Applied in the launcher's fork child after it joined its cgroups and before
it execs the agent (actuate/launch.py), in this order:

1. the capability bounding set loses the capabilities that undo containment
   (DROPPED_CAPS): a root agent's program gets at most the rest at exec;
2. no_new_privs: setuid/setgid helpers (su, sudo, crontab, at) and file
   capabilities grant nothing any more;
3. a seccomp filter (libseccomp's Python bindings, python3-seccomp) fails
   ptrace, cross-process memory access, bpf, perf_event_open, kexec and
   module loading with EPERM, and clone3 with ENOSYS (libc falls back to
   clone, which cannot pick a cgroup: no CLONE_INTO_CGROUP escape).

The daemon cannot apply any of this to agents it only adopts: they are
already running (see docs/threat-model.md).
"""

from __future__ import annotations

import ctypes
import errno

from ..core.errors import EnvironmentProblem
from ..core.policy import Privileges

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

# capability numbers (linux/capability.h). Dropped: each one lets a process
# leave, blind or rewrite its containment.
DROPPED_CAPS: dict[str, int] = {
    "CAP_DAC_READ_SEARCH": 2,    # open_by_handle_at: reach files outside a mount namespace
    "CAP_NET_ADMIN": 12,         # routes, netfilter, interfaces, tc: around the egress rules
    "CAP_SYS_MODULE": 16,        # load kernel code
    "CAP_SYS_RAWIO": 17,         # /dev/mem, ioperm, raw disk and device access
    "CAP_SYS_PTRACE": 19,        # trace processes outside the agent
    "CAP_SYS_ADMIN": 21,         # mount, setns, cgroup and BPF administration, ...
    "CAP_SYS_BOOT": 22,          # reboot / kexec
    "CAP_SYS_RESOURCE": 24,      # override the agent's limits
    "CAP_SYS_TIME": 25,          # skew the clock the audit log is stamped with
    "CAP_MKNOD": 27,             # device nodes for GPUs / disks the agent was not given
    "CAP_AUDIT_CONTROL": 30,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,            # kernel addresses for exploits
    "CAP_PERFMON": 38,           # perf events on other processes
    "CAP_BPF": 39,               # load BPF: detach or rewrite pycontain's programs
    "CAP_CHECKPOINT_RESTORE": 40,
}

# system calls that fail with EPERM under the filter. io_uring: its requests
# (IORING_OP_SOCKET, ...) pass no system-call tracepoint, so the kill of a
# packet socket or a family no hook judges (ebpf/socket.c) would not see
# them; Docker's default profile refuses it too (libuv and others fall back).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "bpf", "perf_event_open",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)
ENOSYS_SYSCALLS = ("clone3",)
CLONE_NEWUSER = 0x10000000


def build_filter(settings: Privileges):
    """The seccomp filter, built in the parent (the child only loads it), or
    None when the policy turns seccomp off."""
    if not settings.seccomp:
        return None
    try:
        import seccomp
    except ImportError:
        raise EnvironmentProblem("libseccomp's Python bindings are missing",
                                 hint="apt-get install python3-seccomp (scripts/install.sh), "
                                      "or set privileges.seccomp: false in the policy") from None
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    if not settings.no_new_privs:   # libseccomp sets it by default; root loads without it
        f.set_attr(seccomp.Attr.CTL_NNP, 0)
    for name in DENIED_SYSCALLS:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    for name in ENOSYS_SYSCALLS:
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
    if not settings.user_namespaces:
        _refuse_user_namespaces(f, seccomp)
    return f


def _refuse_user_namespaces(f, seccomp) -> None:
    """unshare/clone with CLONE_NEWUSER and setns fail with EPERM. Without
    a user namespace of its own the agent has no CAP_SYS_ADMIN anywhere, so
    no mount or network namespace either (clone3 is ENOSYS above; x86-64
    and arm64 pass clone's flags first)."""
    newuser = seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)
    f.add_rule(seccomp.ERRNO(errno.EPERM), "unshare", newuser)
    f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", newuser)
    f.add_rule(seccomp.ERRNO(errno.EPERM), "setns")


_LIBC = ctypes.CDLL(None, use_errno=True)
# resolved once, here: looked up in the fork child it cost ~70 us a call
# (dlopen + symbol lookup), 1.2 ms for the bounding set per agent start
_PRCTL = _LIBC.prctl
_PRCTL.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


def _prctl(option: int, arg: int) -> None:
    if _PRCTL(option, arg, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        if not (option == PR_CAPBSET_DROP and e == errno.EINVAL):   # a cap this kernel lacks
            raise OSError(e, f"prctl({option}, {arg})")


def drop_bounding_set(settings: Privileges, have_setpcap: bool) -> None:
    """In the fork child, before it changes uid (dropping needs CAP_SETPCAP)."""
    if settings.drop_capabilities and have_setpcap:
        for cap in DROPPED_CAPS.values():
            _prctl(PR_CAPBSET_DROP, cap)


def restrict(settings: Privileges, filt) -> None:
    """In the fork child, last before exec: no_new_privs, then the filter."""
    if settings.no_new_privs:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if filt is not None:
        filt.load()
