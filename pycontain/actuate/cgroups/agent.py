"""One agent's cgroups: a cgroup2 dir (BPF attach point, kill, freeze) and, on
hybrid hosts, one dir per v1 controller hierarchy (the budgets).

Agent cgroups are nested under pycontain's own cgroups in every hierarchy
(or under a configured parent), so an agent never leaves the memory cgroup
(and limits) that pycontain itself was given, and nothing is moved.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...core.errors import EnvironmentProblem, UsageError
from ...core.samples import CgroupSample
from . import fs
from .layout import CgroupLayout, detect_layout

log = logging.getLogger("pycontain.cgroups")

V2_CONTROLLERS = ("cpu", "memory", "pids")
# The v1 hierarchies an agent pycontain creates joins on a hybrid host: the
# budgets. A move costs ~0.25 ms of the kernel's cgroup_mutex per hierarchy,
# the one lock every agent start waits on (32 starts at once: 32 x 6 moves).
# cpuacct and freezer alone are served by cgroup2's core files, which every
# kernel pycontain runs on has (it needs >= 5.8; cpu.stat usage_usec and
# cgroup.freeze exist in any cgroup2 cgroup since 4.15 and 5.2); a controller
# mounted together with a budget one (cpu,cpuacct) comes along.
V1_JOINED = frozenset({"cpu", "memory", "pids"})
CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000          # the kernel refuses cfs quotas below 1 ms
UNLIMITED_V1 = 1 << 62        # v1 reports "no limit" as a huge page-rounded number
FREEZE_TIMEOUT_S = 2.0

DELEGATION_HINT = (
    "on cgroup v2 a cgroup with processes of its own cannot enable controllers for cgroups below it; "
    "give --cgroup-parent a cgroup that has no processes and has cpu, memory and pids in its "
    "cgroup.controllers (e.g. `mkdir /sys/fs/cgroup/pycontain.slice` with `+cpu +memory +pids` in "
    "/sys/fs/cgroup/cgroup.subtree_control, or a systemd slice / Delegate=yes unit whose own process "
    "lives in a leaf child), see docs/cgroups.md")


@dataclass(frozen=True)
class CreatePlan:
    """What :meth:`AgentCgroup.create` needs besides a name (AgentCgroup.plan)."""

    layout: CgroupLayout
    base: str                                       # the cgroup2 parent dir
    v1: tuple[tuple[tuple[str, ...], str], ...]     # (controllers, v1 parent dir) per v1 mount
    missing: dict[str, str]                         # controller -> why it is not available


class AgentCgroup:
    """Use :meth:`create` (pycontain makes and owns the cgroups) or
    :meth:`adopt` (daemon mode: an existing cgroup made by someone else)."""

    def __init__(self, name: str, v2_path: str, v1_paths: dict[str, str] | None = None, *,
                 kind: str = "v2", owned: bool = True, proc_root: str = "/proc",
                 missing: dict[str, str] | None = None):
        self.name = name
        self.v2_path = v2_path
        self.cgroup_id = os.stat(v2_path).st_ino   # what bpf_get_current_cgroup_id() returns
        self.v1_paths = dict(v1_paths or {})
        self.kind = kind
        self.owned = owned
        self.proc_root = proc_root
        self.missing = dict(missing or {})     # controller -> why it is not available here
        self.cpu_budget_cores: float | None = None
        self.throttled_cores: float | None = None
        self._fresh = False        # made by create(), no budget written yet

    def __repr__(self) -> str:
        return f"AgentCgroup({self.name!r}, {self.v2_path!r}, v1={sorted(set(self.v1_paths.values()))})"

    # ---- construction ------------------------------------------------------------

    @classmethod
    def plan(cls, parent: str | None = None, layout: CgroupLayout | None = None, *,
             v1_home: str | None = None) -> CreatePlan:
        """Where :meth:`create` puts an agent's dirs under `parent` (default:
        pycontain's own cgroups); on a hybrid host, under the v1 dirs
        `v1_home` that :func:`make_home` made, where they exist. The daemon
        computes it once for the agents it starts instead of reading
        mountinfo and /proc/self/cgroup per start."""
        layout = layout or detect_layout()
        base = os.path.normpath(parent) if parent else layout.own_v2()
        _check_under(base, layout.unified)
        missing: dict[str, str] = {}
        if layout.kind == "v2":
            missing = _enable_v2_controllers(base, layout)
        v1: list[tuple[tuple[str, ...], str]] = []
        if layout.kind == "hybrid":
            for ctrls in _joined_v1(layout):
                v1_base = _v1_parent(layout, ctrls[0], base if parent else None, v1_home)
                if v1_base is None:
                    for c in ctrls:
                        missing[c] = "pycontain's own v1 cgroup is unknown"
                    continue
                v1.append((tuple(ctrls), v1_base))
        return CreatePlan(layout, base, tuple(v1), missing)

    @classmethod
    def create(cls, name: str, *, parent: str | None = None, layout: CgroupLayout | None = None,
               plan: CreatePlan | None = None) -> AgentCgroup:
        plan = plan or cls.plan(parent, layout)
        dirname = f"pycontain-{name}-{secrets.token_hex(3)}"
        made: list[str] = []
        try:
            v2_path = os.path.join(plan.base, dirname)
            fs.make_dir(v2_path)
            made.append(v2_path)
            v1_paths: dict[str, str] = {}
            for ctrls, v1_base in plan.v1:
                p = os.path.join(v1_base, dirname)
                fs.make_dir(p)
                made.append(p)
                for c in ctrls:
                    v1_paths[c] = p
        except OSError as e:
            for p in reversed(made):
                try:
                    os.rmdir(p)
                except OSError:
                    pass
            raise EnvironmentProblem(f"cannot create the agent cgroup {dirname} under {plan.base}: "
                                     f"{e.strerror}") from e
        made_cg = cls(name, v2_path, v1_paths, kind=plan.layout.kind, owned=True,
                      proc_root=plan.layout.proc_root, missing=dict(plan.missing))
        made_cg._fresh = True
        return made_cg

    @classmethod
    def adopt(cls, v2_path: str, name: str, layout: CgroupLayout | None = None) -> AgentCgroup:
        layout = layout or detect_layout()
        v2_path = os.path.normpath(v2_path)
        _check_under(v2_path, layout.unified)
        if not os.path.isdir(v2_path):
            raise UsageError(f"no cgroup {v2_path}")
        v1_paths: dict[str, str] = {}
        missing: dict[str, str] = {}
        if layout.kind == "hybrid":
            v1_paths, missing = _v1_of_members(v2_path, layout)
        return cls(name, v2_path, v1_paths, kind=layout.kind, owned=False,
                   proc_root=layout.proc_root, missing=missing)

    def to_dict(self) -> dict:
        """What the watchdog process needs to rebuild this object."""
        return {"name": self.name, "v2_path": self.v2_path, "v1_paths": self.v1_paths,
                "kind": self.kind, "owned": self.owned, "proc_root": self.proc_root}

    @classmethod
    def from_dict(cls, d: dict) -> AgentCgroup:
        return cls(d["name"], d["v2_path"], d.get("v1_paths") or {}, kind=d.get("kind", "v2"),
                   owned=d.get("owned", True), proc_root=d.get("proc_root", "/proc"))

    # ---- membership -----------------------------------------------------------------

    def _v1_dirs(self) -> list[str]:
        out: list[str] = []
        for p in self.v1_paths.values():
            if p not in out:
                out.append(p)
        return out

    def procs_files(self) -> list[str]:
        """Each v1 dir, then v2 last: the v2 write makes the task an agent's
        (the BPF filter keys on it), and an agent task that moves in a v1
        hierarchy is a boundary escape (ebpf/boundary.c). The child joins
        them before it execs anything, so nothing runs unseen in between."""
        return [os.path.join(d, "cgroup.procs") for d in [*self._v1_dirs(), self.v2_path]]

    def pids(self) -> list[int]:
        out = fs.subtree_procs(self.v2_path)
        for d in self._v1_dirs():
            for p in fs.subtree_procs(d):
                if p not in out:
                    out.append(p)
        return out

    # ---- budgets -----------------------------------------------------------------------

    def set_budgets(self, *, cpu_cores: float | None, memory_bytes: int | None,
                    memory_high_bytes: int | None, pids: int | None) -> None:
        """Write every budget (None = unlimited). A budget that cannot be applied
        raises EnvironmentProblem for cgroups pycontain created (after applying
        the others), and is logged for adopted ones (they stay tracked)."""
        problems: list[str] = []
        # a cgroup just made has every limit at "unlimited": writing None
        # again costs 5-6 file writes per agent start and changes nothing
        fresh, self._fresh = self._fresh, False
        self.cpu_budget_cores = cpu_cores
        self.throttled_cores = None
        # (what, writer, its argument): each writer takes its own argument type
        steps: tuple[tuple[str, Callable[[Any], None], object], ...] = (
            ("cpu", self._write_cpu, cpu_cores),
            ("memory", self._write_memory, (memory_bytes, memory_high_bytes)),
            ("pids", self._write_pids, pids))
        for what, fn, value in steps:
            if fresh and value in (None, (None, None)):
                continue
            try:
                fn(value)
            except _Unavailable as e:
                wanted = value if not isinstance(value, tuple) else any(v is not None for v in value)
                if wanted not in (None, False):
                    problems.append(f"{what}: {e}")
            except OSError as e:
                problems.append(f"{what}: {e.strerror or e}")
        if problems:
            msg = f"cannot apply budgets to agent cgroup {self.v2_path}: " + "; ".join(problems)
            if self.owned:
                raise EnvironmentProblem(msg, DELEGATION_HINT)
            log.warning("%s", msg)

    def throttle(self, cpu_cores: float) -> None:
        """Lower the CPU allowance; the budget is kept for :meth:`unthrottle`."""
        self._write_cpu(max(cpu_cores, MIN_QUOTA_US / CPU_PERIOD_US))
        self.throttled_cores = cpu_cores

    def unthrottle(self) -> None:
        self._write_cpu(self.cpu_budget_cores)
        self.throttled_cores = None

    def _ctl_dir(self, controller: str, v2_file: str) -> tuple[str, bool]:
        """(dir, is_v2) holding `controller`'s files, or raise _Unavailable."""
        if self.kind == "v2":
            if os.path.exists(os.path.join(self.v2_path, v2_file)):
                return self.v2_path, True
        elif controller in self.v1_paths:
            return self.v1_paths[controller], False
        raise _Unavailable(self.missing.get(controller,
                                            f"the {controller} controller is not available for this cgroup"))

    def _write_cpu(self, cores: float | None) -> None:
        d, v2 = self._ctl_dir("cpu", "cpu.max")
        quota = None if cores is None else max(MIN_QUOTA_US, round(cores * CPU_PERIOD_US))
        if v2:
            fs.write(os.path.join(d, "cpu.max"), f"{'max' if quota is None else quota} {CPU_PERIOD_US}")
        else:
            fs.write(os.path.join(d, "cpu.cfs_period_us"), CPU_PERIOD_US)
            fs.write(os.path.join(d, "cpu.cfs_quota_us"), -1 if quota is None else quota)

    def _write_memory(self, value: tuple[int | None, int | None]) -> None:
        limit, high = value
        d, v2 = self._ctl_dir("memory", "memory.max")
        if v2:
            fs.write(os.path.join(d, "memory.max"), "max" if limit is None else int(limit))
            fs.write(os.path.join(d, "memory.high"), "max" if high is None else int(high))
            swap = os.path.join(d, "memory.swap.max")
            if os.path.exists(swap):
                # the memory budget is a RAM budget: the agent cannot escape it by swapping
                fs.write(swap, "max" if limit is None else 0)
            return
        lim = -1 if limit is None else int(limit)
        limit_file = os.path.join(d, "memory.limit_in_bytes")
        memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            # memsw (RAM+swap) must stay >= the RAM limit at every instant:
            # lowering writes the RAM limit first, raising the memsw one first
            try:
                fs.write(limit_file, lim)
                fs.write(memsw, lim)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                fs.write(memsw, lim)
                fs.write(limit_file, lim)
        else:
            fs.write(limit_file, lim)
        fs.write(os.path.join(d, "memory.soft_limit_in_bytes"), -1 if high is None else int(high))

    def _write_pids(self, n: int | None) -> None:
        d, _ = self._ctl_dir("pids", "pids.max")
        fs.write(os.path.join(d, "pids.max"), "max" if n is None else int(n))

    # ---- freeze / thaw / kill ---------------------------------------------------------------

    def _v2_freeze_file(self) -> str | None:
        p = os.path.join(self.v2_path, "cgroup.freeze")      # kernel >= 5.2
        return p if os.path.exists(p) else None

    def _v2_kill_file(self) -> str | None:
        p = os.path.join(self.v2_path, "cgroup.kill")        # kernel >= 5.14
        return p if os.path.exists(p) else None

    def _v1_freezer(self) -> str | None:
        d = self.v1_paths.get("freezer")
        return os.path.join(d, "freezer.state") if d else None

    def freeze(self, wait: bool = True, timeout: float = FREEZE_TIMEOUT_S) -> None:
        """Stop every task of the subtree. With `wait`, return once the kernel
        reports them all frozen, or raise TimeoutError (a task in
        uninterruptible sleep, e.g. inside a driver call, freezes later)."""
        f2, f1 = self._v2_freeze_file(), self._v1_freezer()
        if f2:
            fs.write(f2, "1")
        elif f1:
            fs.write(f1, "FROZEN")
        else:
            raise EnvironmentProblem("no freezer for this cgroup (kernel < 5.2 and no v1 freezer)")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while not self.is_frozen():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.v2_path}: freeze not complete after {timeout:g}s")
            time.sleep(0.005)

    def thaw(self) -> None:
        """Idempotent; a cgroup already removed has nothing left to thaw."""
        f2, f1 = self._v2_freeze_file(), self._v1_freezer()
        try:
            if f2:
                fs.write(f2, "0")
            if f1 and (fs.read_or(f1, "") or "").strip() not in ("THAWED", ""):
                fs.write(f1, "THAWED")
        except FileNotFoundError:
            pass

    def is_frozen(self) -> bool:
        f2, f1 = self._v2_freeze_file(), self._v1_freezer()
        if f2:
            ev = fs.keyed(fs.read_or(os.path.join(self.v2_path, "cgroup.events")))
            if "frozen" in ev:
                return ev["frozen"] == 1
            return (fs.read_or(f2, "0") or "0").strip() == "1"
        if f1:
            return (fs.read_or(f1, "") or "").strip() == "FROZEN"
        return False

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the subtree, including daemons that left
        the process tree (they cannot leave the cgroup). Raise TimeoutError
        if some survive `timeout`."""
        deadline = time.monotonic() + timeout
        kill_file = self._v2_kill_file()
        if kill_file:
            # the kernel kills the whole subtree and makes concurrent forks fail
            fs.write(kill_file, "1")
            f1 = self._v1_freezer()
            if f1 and (fs.read_or(f1, "") or "").strip() != "THAWED":
                fs.write(f1, "THAWED")   # v1-frozen tasks take SIGKILL only once thawed
            settle = min(deadline, time.monotonic() + 1.0)
            while self.pids() and time.monotonic() < settle:
                time.sleep(0.005)
        # fallback (and for processes only the v1 dirs still hold): freeze so
        # nothing forks between reading the list and killing it, kill, thaw so
        # v1-frozen tasks can die, repeat
        while True:
            pids = self.pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.v2_path}: {len(pids)} process(es) survived kill")
            try:
                self.freeze(wait=True, timeout=0.2)
            except (TimeoutError, EnvironmentProblem, OSError):
                pass
            self._sigkill_each()
            try:
                self.thaw()
            except OSError:
                pass
            time.sleep(0.01)

    def send_kill(self) -> None:
        """SIGKILL the subtree without waiting for it to die: cgroup.kill
        where the kernel has it (5.14), else each process listed now. A stop
        that ends many agents sends this to all of them first and then waits
        once (:meth:`remove` finds little or nothing left), not up to
        `timeout` per agent."""
        kill_file = self._v2_kill_file()
        if kill_file:
            fs.write(kill_file, "1")
            return
        self._sigkill_each()

    def _sigkill_each(self) -> None:
        """SIGKILL each process listed now (one already gone is no error)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---- reading ------------------------------------------------------------------------------

    def sample(self) -> CgroupSample:
        cpu = self._cpu_usage_seconds()
        mem = self._first_int([(self.v2_path, "memory.current"),
                               (self.v1_paths.get("memory"), "memory.usage_in_bytes")])
        npids = self._first_int([(self.v2_path, "pids.current"), (self.v1_paths.get("pids"), "pids.current")])
        if npids is None:
            npids = len(self.pids())
        high_events = oom_kills = 0
        ev = fs.read_or(os.path.join(self.v2_path, "memory.events"))
        if ev is not None:
            k = fs.keyed(ev)
            high_events, oom_kills = k.get("high", 0), k.get("oom_kill", 0)
        elif "memory" in self.v1_paths:
            oom_control = fs.read_or(os.path.join(self.v1_paths["memory"], "memory.oom_control"))
            oom_kills = fs.keyed(oom_control).get("oom_kill", 0)
        mem_max, mem_high = self._memory_limits()
        return CgroupSample(cpu_usage_seconds=cpu, memory_bytes=mem or 0, pids=npids,
                            cpu_limit_cores=self.cpu_limit_cores(), memory_max_bytes=mem_max,
                            memory_high_bytes=mem_high, memory_events_high=high_events,
                            memory_events_oom_kill=oom_kills)

    def cpu_limit_cores(self) -> float | None:
        """The CPU allowance in force now (budget or throttle), None = unlimited."""
        text = fs.read_or(os.path.join(self.v2_path, "cpu.max"))
        if text is not None:
            q, _, period = text.strip().partition(" ")
            return None if q == "max" else int(q) / int(period or CPU_PERIOD_US)
        d = self.v1_paths.get("cpu")
        if d:
            quota = fs.read_or(os.path.join(d, "cpu.cfs_quota_us"))
            per = fs.read_or(os.path.join(d, "cpu.cfs_period_us"))
            if quota is not None and per is not None and int(quota) > 0:
                return int(quota) / int(per)
        return None

    def _cpu_usage_seconds(self) -> float:
        d = self.v1_paths.get("cpuacct")
        if d:
            ns = fs.read_or(os.path.join(d, "cpuacct.usage"))
            if ns is not None:
                return int(ns) / 1e9
        # cpu.stat usage_usec is a core cgroup2 file: present even without the cpu controller
        usec = fs.keyed(fs.read_or(os.path.join(self.v2_path, "cpu.stat"))).get("usage_usec", 0)
        return usec / 1e6

    def _memory_limits(self) -> tuple[int | None, int | None]:
        if os.path.exists(os.path.join(self.v2_path, "memory.max")):
            return (_v2_limit(fs.read_or(os.path.join(self.v2_path, "memory.max"))),
                    _v2_limit(fs.read_or(os.path.join(self.v2_path, "memory.high"))))
        d = self.v1_paths.get("memory")
        if d:
            return (_v1_limit(fs.read_or(os.path.join(d, "memory.limit_in_bytes"))),
                    _v1_limit(fs.read_or(os.path.join(d, "memory.soft_limit_in_bytes"))))
        return None, None

    @staticmethod
    def _first_int(candidates: list[tuple[str | None, str]]) -> int | None:
        for d, f in candidates:
            if d:
                t = fs.read_or(os.path.join(d, f))
                if t is not None and t.strip().lstrip("-").isdigit():
                    return int(t)
        return None

    # ---- teardown ---------------------------------------------------------------------------

    def remove(self, timeout: float = 5.0) -> None:
        """Kill leftovers and remove every dir (children first). Idempotent.
        Adopted cgroups belong to someone else: they are left alone."""
        if not self.owned:
            return
        deadline = time.monotonic() + timeout
        if os.path.isdir(self.v2_path) or any(os.path.isdir(d) for d in self._v1_dirs()):
            if self.pids():
                self.kill(timeout=max(0.1, deadline - time.monotonic()))
            try:
                self.thaw()
            except OSError:
                pass
        for d in [self.v2_path, *self._v1_dirs()]:
            fs.remove_tree(d, deadline)

    def clear(self, timeout: float = 5.0) -> list[str]:
        """Kill every process of the subtree and remove the cgroups below this
        one, keeping this one (a daemon's home, :func:`make_home`). Returns
        the cgroup2 dirs that were below it."""
        below = _child_dirs(self.v2_path)
        if self.pids():
            self.kill(timeout)
        deadline = time.monotonic() + timeout
        for d in [self.v2_path, *self._v1_dirs()]:
            for child in _child_dirs(d):
                fs.remove_tree(child, deadline)
        return below


def _child_dirs(path: str) -> list[str]:
    try:
        return sorted(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def make_home(base: str, name: str, layout: CgroupLayout) -> str:
    """A cgroup2 dir `name` under `base` meant to hold only agent cgroups (the
    node daemon's started agents): their cgroup programs are attached there
    once instead of to each agent. Kept if it exists (a restarted daemon's)."""
    _check_under(base, layout.unified)
    if layout.kind == "v2":
        _enable_v2_controllers(base, layout)       # what is missing shows in each agent's plan
    path = os.path.join(base, name)
    try:
        fs.make_dir(path)
    except FileExistsError:
        pass
    if layout.kind == "hybrid":
        _make_v1_homes(name, layout)
    return path


def _make_v1_homes(name: str, layout: CgroupLayout) -> None:
    """On a hybrid host, the same dir in each budget hierarchy, under
    pycontain's own v1 cgroup (never outside the memory cgroup it was given).
    Without it every agent would be a sibling of the daemon in the v1 cpu
    hierarchy, and 32 busy agents would leave the daemon 1/33 of the CPU
    shares, too little to drain their records; one home group shares the
    CPU with the daemon as one peer. A dir that cannot be made leaves the
    agents directly under pycontain's own cgroup, as before."""
    for ctrls in _joined_v1(layout):
        own = _own_v1_or_none(layout, ctrls[0])
        if own is None:
            continue
        try:
            fs.make_dir(os.path.join(own, name))
        except FileExistsError:
            pass
        except OSError as e:
            log.warning("agents of this daemon share no v1 %s group: %s", ",".join(ctrls), e.strerror)


def remove_home(plan: CreatePlan, name: str) -> None:
    """Remove the home dirs :func:`make_home` made, where empty (one that still
    holds an agent stays, with its programs attached)."""
    for d in [plan.base, *(b for _c, b in plan.v1)]:
        if os.path.basename(d) == name:
            try:
                fs.remove_dir(d)
            except OSError:
                pass


def home_cgroup(plan: CreatePlan, name: str) -> AgentCgroup | None:
    """The home dirs :func:`make_home` made, as one cgroup: a kill of it (or
    the watchdog's) ends every agent below it at once, however many, and
    covers an agent from its mkdir on. None when `plan` puts agents
    elsewhere (the home could not be made)."""
    if os.path.basename(plan.base) != name:
        return None
    v1 = {c: b for ctrls, b in plan.v1 if os.path.basename(b) == name for c in ctrls}
    return AgentCgroup(name, plan.base, v1, kind=plan.layout.kind, owned=True, proc_root=plan.layout.proc_root)


class _Unavailable(Exception):
    pass


def _v2_limit(text: str | None) -> int | None:
    if text is None or text.strip() in ("", "max"):
        return None
    return int(text)


def _v1_limit(text: str | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    v = int(text)
    return None if v < 0 or v >= UNLIMITED_V1 else v


def _check_under(path: str, mount: str) -> None:
    real, m = os.path.realpath(path), os.path.realpath(mount)
    if real != m and not real.startswith(m.rstrip("/") + "/"):
        raise UsageError(f"cgroup {path} is not inside the cgroup2 hierarchy at {mount}")
    if not os.path.isdir(path):
        raise UsageError(f"no cgroup {path}")


def _tokens(text: str | None) -> set[str]:
    return {t.lstrip("+") for t in (text or "").split()}


def _enable_v2_controllers(base: str, layout: CgroupLayout) -> dict[str, str]:
    """Make cpu, memory and pids available to children of `base`; return the
    ones that cannot be, with why. Nothing is moved: a `base` that holds
    processes of its own (pycontain itself, usually) cannot enable controllers
    below it unless it is the root cgroup."""
    missing: dict[str, str] = {}
    have = _tokens(fs.read_or(os.path.join(base, "cgroup.controllers")))
    enabled = _tokens(fs.read_or(os.path.join(base, "cgroup.subtree_control")))
    todo = []
    for c in V2_CONTROLLERS:
        if c not in layout.v2_controllers:
            missing[c] = f"the kernel's cgroup2 hierarchy has no {c} controller"
        elif c in enabled:
            continue
        elif c not in have:
            missing[c] = f"{c} is not delegated to {base} (its parent's cgroup.subtree_control lacks it)"
        else:
            todo.append(c)
    if todo:
        try:
            fs.write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in todo))
        except OSError as e:
            if e.errno == errno.EBUSY:
                why = (f"{base} has processes of its own, so it cannot enable {', '.join(todo)} "
                       "for cgroups below it (cgroup v2 'no internal processes' rule)")
            else:
                why = f"cannot enable {', '.join(todo)} in {base}/cgroup.subtree_control: {e.strerror}"
            for c in todo:
                missing[c] = why
    return missing


def _v1_parent(layout: CgroupLayout, ctrl: str, v2_parent: str | None, v1_home: str | None = None) -> str | None:
    """The v1 home made by make_home when it exists; else a configured v2
    parent maps to the same relative path in each v1 hierarchy when that dir
    exists; otherwise pycontain's own v1 cgroup."""
    if v1_home:
        own = _own_v1_or_none(layout, ctrl)
        if own and os.path.isdir(os.path.join(own, v1_home)):
            return os.path.join(own, v1_home)
    if v2_parent:
        rel = os.path.relpath(v2_parent, layout.unified)
        cand = os.path.normpath(os.path.join(layout.v1[ctrl], rel))
        if rel != "." and os.path.isdir(cand):
            return cand
    return _own_v1_or_none(layout, ctrl)


def _joined_v1(layout: CgroupLayout) -> list[list[str]]:
    """The controllers of each v1 mount an agent joins (V1_JOINED)."""
    return [ctrls for ctrls in layout.v1_mounts().values() if V1_JOINED & set(ctrls)]


def _own_v1_or_none(layout: CgroupLayout, ctrl: str) -> str | None:
    try:
        return layout.own_v1(ctrl)
    except OSError:
        return None


def _v1_of_members(v2_path: str, layout: CgroupLayout) -> tuple[dict[str, str], dict[str, str]]:
    """For an adopted cgroup on a hybrid host, the v1 cgroups its processes
    sit in, per controller, kept only when they hold nothing but the agent's
    processes (a budget written there must not hit anyone else)."""
    members = set(fs.subtree_procs(v2_path))
    v1_paths: dict[str, str] = {}
    missing: dict[str, str] = {}
    for ctrl, mount in layout.v1.items():
        paths = set()
        for pid in members:
            try:
                p = layout.own_v1(ctrl, pid)
            except OSError:
                continue          # exited meanwhile
            if p:
                paths.add(p)
        if len(paths) != 1:
            missing[ctrl] = ("no process to locate its v1 cgroup" if not paths
                             else "its processes are spread over several v1 cgroups")
            continue
        p = paths.pop()
        if os.path.normpath(p) == os.path.normpath(mount) or not set(fs.subtree_procs(p)) <= members:
            missing[ctrl] = f"its v1 {ctrl} cgroup {p} is shared with processes outside the agent"
            continue
        v1_paths[ctrl] = p
    return v1_paths, missing
