"""`pycontain doctor`: check the host and explain each result.

Each check says what it found and why it matters; required checks failing
make the exit status 1. Hook types are tried for real (tiny programs are
loaded), not guessed from the kernel version.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table

BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_RINGBUF = 27
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)


@dataclass
class Check:
    name: str
    status: str        # ok | warn | fail
    detail: str
    why: str
    required: bool = True


def _bpf_map_create(map_type: int, key: int, value: int, entries: int) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 30)()   # union bpf_attr, zeroed
    attr[0], attr[1], attr[2], attr[3] = map_type, key, value, entries
    fd = libc.syscall(SYS_BPF, BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    err = ctypes.get_errno()
    if fd >= 0:
        os.close(fd)
    return fd, err


def check_root() -> Check:
    ok = os.geteuid() == 0
    return Check("root", "ok" if ok else "fail", f"euid {os.geteuid()}",
                 "loading BPF programs, creating cgroups and killing agents need root "
                 "(or CAP_BPF+CAP_SYS_ADMIN+CAP_PERFMON)")


def check_bpf_syscall() -> Check:
    fd, err = _bpf_map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    ok = fd >= 0
    return Check("bpf syscall", "ok" if ok else "fail", "map created" if ok else f"bpf() failed: {os.strerror(err)}",
                 "every probe and deny table is a BPF object; kernel.unprivileged_bpf_disabled does not matter as root")


def check_ringbuf() -> Check:
    fd, err = _bpf_map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)
    ok = fd >= 0
    return Check("ring buffer", "ok" if ok else "fail", "BPF_MAP_TYPE_RINGBUF works" if ok else os.strerror(err),
                 "events reach user space through a BPF ring buffer (kernel ≥ 5.8); the kernel counts what it drops")


def check_btf() -> Check:
    p = "/sys/kernel/btf/vmlinux"
    ok = os.path.exists(p)
    return Check("BTF", "ok" if ok else "fail", p if ok else "missing (CONFIG_DEBUG_INFO_BTF=n)",
                 "struct offsets (parent pid, start time, argv of the new image) are read from BTF, not from headers")


def check_tracefs() -> Check:
    for p in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"):
        if os.path.isdir(p):
            return Check("tracefs", "ok", os.path.dirname(p), "BCC attaches tracepoints through tracefs")
    return Check("tracefs", "fail", "not mounted", "mount it: mount -t tracefs nodev /sys/kernel/tracing")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
        return Check("bcc", "ok", f"bcc {getattr(bcc, '__version__', '?')} from {os.path.dirname(bcc.__file__)}",
                     "probes are compiled at start by BCC (distro package python3-bpfcc)")
    except Exception as e:
        return Check("bcc", "fail", f"not importable: {e}",
                     "install python3-bpfcc (PyPI's 'bcc' is unrelated); scripts/install.sh does it")


def check_headers() -> Check:
    rel = platform.release()
    build = f"/lib/modules/{rel}/build"
    if not os.path.exists(os.path.join(build, "include")):
        return Check("kernel headers", "fail", f"{build} missing",
                     "BCC compiles against kernel headers; scripts/install.sh installs or links them")
    target = os.path.realpath(build)
    generic = rel not in target
    return Check("kernel headers", "warn" if generic else "ok",
                 f"{build} -> {target}" + (" (generic headers, not this kernel's)" if generic else ""),
                 "fine for pycontain: no kernel struct layout is taken from headers (BTF gives offsets)",
                 required=False)


def check_cgroups() -> Check:
    try:
        from ..actuate.cgroups import detect_layout
        lay = detect_layout()
        detail = f"{lay.kind}: cgroup2 at {lay.unified}"
        if getattr(lay, "v1", None):
            detail += "; v1 controllers " + ", ".join(sorted(lay.v1))
        return Check("cgroups", "ok", detail, "agents get their own cgroup, nested under pycontain's own; "
                     "v2 hosts BPF hooks, v1 (hybrid) the controllers")
    except Exception as e:
        return Check("cgroups", "fail", str(e), "a cgroup2 hierarchy is required for BPF cgroup hooks")


def check_hooks() -> list[Check]:
    try:
        from ..kernel.features import detect_features
        rep = detect_features()
        d = rep.as_dict()
    except Exception as e:
        return [Check("hook types", "fail", f"feature detection failed: {e}", "needs root and bcc")]
    out = []
    chosen = d.get("exec_enforcement") or d.get("chosen", {})
    for hook, status in sorted((d.get("hooks") or {}).items()):
        ok = status in (True, "ok", "available")
        out.append(Check(f"hook {hook}", "ok" if ok else "warn", str(status),
                         "tried by loading a tiny program", required=False))
    out.append(Check("exec enforcement", "ok" if chosen else "warn", str(chosen),
                     "the strongest available hook is used: BPF-LSM denies with EPERM; "
                     "the tracepoint path kills with SIGKILL before the new image runs"))
    return out


def check_nvml() -> Check:
    try:
        from ..gpu.nvml import Nvml
        n = Nvml()
        st = n.status
        return Check("NVML", "ok" if n.available else "warn", st,
                     "GPU budgets and GPU-diversion rules need the NVIDIA driver's NVML; "
                     "without it they report 'unavailable'",
                     required=False)
    except Exception as e:
        return Check("NVML", "warn", f"unavailable: {e}", "GPU rules report unavailable", required=False)


def check_gpu_extras() -> list[Check]:
    """GPM (the gpu.signature rule) and MPS client attribution."""
    try:
        from ..gpu.devices import gpm_status
        from ..gpu.nvml import Nvml
        n = Nvml()
        if not n.available:
            return []
        gpm = gpm_status(n)
        for i in n.device_indices:
            n.memory_by_pid(i)            # finds MPS servers whose clients NVML cannot list
        mps = ("unavailable: NVML lists no MPS client pids on GPU " + ",".join(map(str, sorted(n.mps_blind)))
               if n.mps_blind else "ok (no MPS server, or NVML lists its clients)")
        n.shutdown()
    except Exception as e:
        return [Check("GPU extras", "warn", f"unavailable: {e}", "", required=False)]
    return [Check("GPM", "ok" if gpm.startswith("ok") else "warn", gpm,
                  "the gpu.signature rule (a miner's integer-heavy, tensor-idle work) reads GPM", required=False),
            Check("MPS attribution", "ok" if mps.startswith("ok") else "warn", mps,
                  "processes behind an MPS server are attributed to their own agent by their client pids",
                  required=False)]


def check_guarantees() -> list[Check]:
    """Which issue-10 guarantees hold here (docs/threat-model.md)."""
    out = []
    dirs = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
    tp = next((p for p in dirs if os.path.isdir(p)), None)
    for event, what in (("cgroup_mkdir", "contained from birth (daemon)"),
                        ("cgroup_attach_task", "contained for life (leaving the cgroup is killed)")):
        ok = tp is not None and os.path.isdir(f"{tp}/cgroup/{event}")
        out.append(Check(f"guarantee: {what}", "ok" if ok else "warn",
                         f"cgroup:{event} tracepoint" + ("" if ok else " missing"),
                         "" if ok else "needs a kernel with cgroup tracepoints", required=False))
    try:
        import seccomp  # noqa: F401
        out.append(Check("guarantee: least privilege for run", "ok", "no_new_privs, bounding set, seccomp", "",
                         required=False))
    except ImportError:
        out.append(Check("guarantee: least privilege for run", "warn", "python3-seccomp missing",
                         "apt-get install python3-seccomp (run refuses to start without it unless "
                         "privileges.seccomp: false)", required=False))
    out.append(check_unix_hook())
    out.append(check_ptrace_scope())
    out.append(Check("guarantee: full-root agents", "warn", "best effort without BPF-LSM",
                     "a root agent with CAP_SYS_ADMIN/CAP_BPF can detach BPF programs; see docs/threat-model.md",
                     required=False))
    return out


def check_unix_hook(btf: str = "/sys/kernel/btf/vmlinux") -> Check:
    """Issue 10 part 4: the cgroup unix connect/sendmsg hooks (kernel >= 6.7)."""
    what = "guarantee: unix sockets outside the agent refused"
    try:
        with open(btf, "rb") as fh:
            ok = b"BPF_CGROUP_UNIX_CONNECT\0" in fh.read()
    except OSError:
        ok = False
    if ok:
        return Check(what, "ok", "cgroup unix connect/sendmsg hooks", "", required=False)
    return Check(what, "warn", "kernel has no cgroup unix connect hook (< 6.7)",
                 "fallback: only the agent's dynamic uid keeps it from other users' unix sockets; abstract "
                 "sockets stay reachable (docs/threat-model.md)", required=False)


def check_ptrace_scope(path: str = "/proc/sys/kernel/yama/ptrace_scope") -> Check:
    """Yama: without it (or at 0) a process may write the memory of any
    same-uid, dumpable process through /proc/PID/mem (the agent's seccomp
    filter stops ptrace and process_vm_*, not an open of that file)."""
    what = "guarantee: named-user agents cannot write that user's other processes"
    try:
        with open(path, encoding="ascii") as fh:
            scope = int(fh.read().strip() or "0")
    except (OSError, ValueError):
        scope = None
    if scope:
        return Check(what, "ok", f"kernel.yama.ptrace_scope = {scope}", "", required=False)
    return Check(what, "warn", "Yama absent" if scope is None else "kernel.yama.ptrace_scope = 0",
                 "an agent run as a named --user can write the memory of that uid's processes outside the "
                 "agent (/proc/PID/mem) and run code uncontained; dynamic uids (the default) are unaffected; "
                 "set kernel.yama.ptrace_scope=1 (docs/threat-model.md)", required=False)


def run_checks() -> list[Check]:
    checks = [check_root(), check_bpf_syscall(), check_btf(), check_ringbuf(), check_tracefs(), check_bcc(),
              check_headers(), check_cgroups()]
    if checks[0].status == "ok" and checks[5].status == "ok" and checks[4].status == "ok":
        checks += check_hooks()
    checks += check_guarantees()
    checks.append(check_nvml())
    checks += check_gpu_extras()
    return checks


def run_doctor(as_json: bool = False) -> int:
    checks = run_checks()
    failed = [c for c in checks if c.status == "fail" and c.required]
    if as_json:
        print(json.dumps({"ok": not failed, "kernel": platform.release(), "checks": [asdict(c) for c in checks]},
                         indent=2))
    else:
        t = Table(title=f"pycontain doctor — kernel {platform.release()}")
        t.add_column("check")
        t.add_column("result")
        t.add_column("detail")
        t.add_column("why it matters", overflow="fold")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            t.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", escape(c.detail), escape(c.why))
        Console().print(t)
        Console().print("[green]host is ready[/green]" if not failed else
                        f"[red]{len(failed)} required check(s) failed[/red]: " + ", ".join(c.name for c in failed))
    return 0 if not failed else 1
