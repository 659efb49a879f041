"""`pycontain daemon`: node-wide containment of agents started by others.

It scans for cgroups that match the policy's selectors, tracks them with the
same probes and engine as `pycontain run`, serves the state API (top, status,
kill/freeze/thaw, adopt/release) on a root-only Unix socket, and reloads the
policy on SIGHUP. An invalid new policy is rejected and the old one stays in
force; a valid one is swapped in by rewriting the maps in place, so there is
no gap in enforcement.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

from ..actuate.cgroups import AgentCgroup, detect_layout
from ..actuate.discovery import clean_name, find_agents
from ..core.cgroup_glob import attach_prefix, compile_selectors
from ..core.errors import EnvironmentProblem, PycontainError
from ..core.policy import builtin_policy, load_policy
from ..gpu.devices import GpuDevices
from ..observe.audit import open_audit
from ..observe.report import Reporter, progress_printer
from .agent_api import AgentStarter
from .edges import Edges
from .session import Session

log = logging.getLogger("pycontain.daemon")

STEP_MS = 10      # ring wait per loop turn, outside the lock (Probes.wait)


@dataclass
class DaemonOptions:
    policy_path: str | None = None       # None: the built-in default policy
    audit_log: str | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    socket_path: str = "/run/pycontain/pycontain.sock"
    allow_no_gpu: bool = False
    scan_interval: float = 2.0
    verbose: int = 0


class Daemon:
    def __init__(self, opts: DaemonOptions, edges: Edges | None = None):
        self.opts = opts
        self.policy = _node_policy(opts.policy_path)
        self.reporter = Reporter(verbose=opts.verbose)
        self.session = Session(self.policy, audit=open_audit(opts.audit_log), report=self.reporter.record,
                               progress=progress_printer(opts.verbose), allow_no_gpu=opts.allow_no_gpu,
                               edges=edges, gpu_devices=_gpu_devices(self.policy, opts.allow_no_gpu))
        self.ctl, self.state, self.audit = self.session.ctl, self.session.state, self.session.audit
        self.lock = self.session.lock        # API threads vs the main loop
        self.adopted: dict[str, str] = {}     # name -> path, via the API
        self.discovered: dict[str, str] = {}  # name -> path, via selectors
        self._reload = False
        self._stop = False
        self._last_scan = 0.0
        self._births: list = []               # cgroup-birth events to adopt after the poll
        self.starter = AgentStarter(self.ctl, self.lock)    # agents started through the API (run, client)

    # ---- API handlers (called from server threads) --------------------------

    def _adopt(self, body: dict) -> dict:
        path, name = str(body.get("cgroup", "")), str(body.get("name", ""))
        if not name or not path:
            return {"ok": False, "error": "adopt needs cgroup and name"}
        full = path if os.path.isabs(path) else os.path.join(self._cgroup2_root(), path)
        if not os.path.isdir(full):
            return {"ok": False, "error": f"no cgroup {path!r}"}
        with self.lock:
            if name in self.ctl.cgroups:
                return {"ok": True, "agent": name, "already": True}
            self.ctl.add_agent(name, AgentCgroup.adopt(full, name))
            self.adopted[name] = full
        return {"ok": True, "agent": name, "cgroup": full}

    def _release(self, body: dict) -> dict:
        name = str(body.get("name", ""))
        with self.lock:
            if name not in self.ctl.cgroups:
                return {"ok": False, "error": f"no agent {name!r}"}
            self.ctl.remove_agent(name)
            self.adopted.pop(name, None)
            self.discovered.pop(name, None)
        return {"ok": True, "agent": name}

    # ---- discovery ------------------------------------------------------------

    @staticmethod
    def _cgroup2_root() -> str:
        return detect_layout().unified

    def scan(self) -> None:
        root = self._cgroup2_root()
        own = _own_cgroup2(root)
        matches = find_agents(self.policy.agents, root, exclude={own} if own else None)
        with self.lock:
            live = {m.name: m.path for m in matches}
            live_paths = set(live.values())
            for name, path in list(self.discovered.items()):
                if path not in live_paths or not os.path.isdir(path):
                    self.ctl.remove_agent(name)
                    del self.discovered[name]
            known = set(self.discovered.values()) | set(self.adopted.values())
            for name, path in live.items():
                if name in self.ctl.cgroups or path in known:
                    continue
                try:
                    self.ctl.add_agent(name, AgentCgroup.adopt(path, name))
                    self.discovered[name] = path
                except (OSError, PycontainError) as e:
                    self.reporter.note(f"cannot contain {path}: {e}")
            for name, path in list(self.adopted.items()):
                if not os.path.isdir(path):
                    self.ctl.remove_agent(name)
                    del self.adopted[name]

    # ---- birth (issue 10) --------------------------------------------------------

    def arm_birth(self) -> None:
        """Hand the selectors the kernel can match to the cgroup-birth hook and
        attach the cgroup programs once at the selected cgroups' ancestors,
        so a cgroup made later is contained before its first task runs."""
        probes = self.ctl.probes
        if probes is None or not probes.has_boundary:
            return
        probes.set_birth(compile_selectors(self.policy.agents))
        root = self._cgroup2_root()
        for rel in ancestor_dirs(self.policy.agents):
            try:
                probes.attach_at_ancestor(_deepest_existing(root, rel))
            except (OSError, PycontainError) as e:
                self.reporter.note(f"cgroup programs not attached at an ancestor ({e}): per agent cgroup instead")

    def _on_birth(self, ev) -> None:
        self._births.append(ev)

    def adopt_births(self) -> None:
        """Name and adopt the cgroups the kernel marked at birth (already
        contained in the kernel: this adds budgets, GPU confinement, names)."""
        births, self._births = self._births, []
        root = self._cgroup2_root()
        for ev in births:
            path = os.path.join(root, os.fsdecode(ev.path).lstrip("/"))
            if ev.selector >= len(self.policy.agents) or not os.path.isdir(path):
                continue
            sel = self.policy.agents[ev.selector]
            name = birth_name(sel, path, set(self.ctl.cgroups))
            with self.lock:
                if path in self.discovered.values() or path in self.adopted.values():
                    continue
                try:
                    self.ctl.add_agent(name, AgentCgroup.adopt(path, name), agent_id=ev.h.agent_id)
                    self.discovered[name] = path
                except (OSError, PycontainError) as e:
                    self.reporter.note(f"cannot adopt {path}: {e}")

    # ---- reload ------------------------------------------------------------

    def reload(self) -> bool:
        try:
            new = _node_policy(self.opts.policy_path)
            with self.lock:
                self.ctl.reload(new)
                self.policy = new
                self.arm_birth()
        except PycontainError as e:
            self.reporter.note(f"policy reload rejected, the old policy stays in force: {e.message}")
            self.audit.write({"ts": time.time(), "agent": "-", "kind": "policy-reload-rejected",
                              "pid": None, "error": e.message})
            return False
        self.reporter.note(f"policy reloaded: {new.name}")
        return True

    # ---- main ----------------------------------------------------------------

    def run(self) -> int:
        if os.geteuid() != 0:
            raise EnvironmentProblem("pycontain daemon needs root (BPF programs, cgroups)")

        def on_hup(*_):
            self._reload = True

        def on_term(*_):
            self._stop = True

        s = self.session
        s.on_signals(on_hup, (signal.SIGHUP,))
        s.on_signals(on_term, (signal.SIGTERM, signal.SIGINT))
        self.ctl.on_birth = self._on_birth
        s.start()
        self.arm_birth()
        try:
            s.serve(socket_path=self.opts.socket_path, metrics_port=self.opts.metrics_port,
                    metrics_addr=self.opts.metrics_addr, handlers={"adopt": self._adopt, "release": self._release,
                                                                 **self.starter.handlers()})
            self.reporter.note(f"daemon ready (policy {self.policy.name}, socket {self.opts.socket_path})")
            while not self._stop:
                self._tick()
            return 0
        finally:
            s.stop_serving()
            self.starter.close()     # agents this daemon started lose containment with it: end them
            with self.lock:
                # leave adopted agents running: they belong to someone else
                for name in list(self.ctl.cgroups):
                    self.ctl.remove_agent(name)
            s.close()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._reload:
            self._reload = False
            self.reload()
        if now - self._last_scan >= self.opts.scan_interval:
            self._last_scan = now
            self.scan()
            self.starter.sweep()
        # wait for the ring outside the lock (a start request takes it at
        # once), drain under it; an old BCC: wait under it, in short slices
        waited = self.session.wait(STEP_MS)
        with self.lock:
            self.session.step(0 if waited else STEP_MS)
        if self._births:
            self.adopt_births()


def ancestor_dirs(selectors) -> list[str]:
    """The directories (relative to the cgroup2 root) to attach the cgroup
    programs at: each kernel-matched selector's literal parent, none inside
    another."""
    a = compile_selectors(selectors)
    dirs = sorted({attach_prefix(selectors[i]) for i in a.kernel})
    out: list[str] = []
    for d in dirs:
        if not any(d == o or o == "" or d.startswith(o + "/") for o in out):
            out.append(d)
    return out


def _deepest_existing(root: str, rel: str) -> str:
    path = root
    for part in [p for p in rel.split("/") if p]:
        nxt = os.path.join(path, part)
        if not os.path.isdir(nxt):
            break
        path = nxt
    return path


def birth_name(sel, path: str, taken: set[str]) -> str:
    """The scan's name for a cgroup (discovery.py): the selector's name for a
    literal glob, `<selector>:<leaf>` otherwise; unique among `taken`."""
    glob = sel.cgroup or sel.systemd_unit or ""
    literal = not any(ch in glob for ch in "*?[")
    name = sel.name if literal else clean_name(f"{sel.name}:{os.path.basename(path)}")
    base, n = name, 2
    while name in taken:
        name = f"{base}#{n}"
        n += 1
    return name


def _node_policy(path: str | None):
    return load_policy(path) if path else builtin_policy("default")


def _own_cgroup2(root: str) -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                hid, _c, path = line.rstrip("\n").split(":", 2)
                if hid == "0":
                    return os.path.join(root, path.lstrip("/")).rstrip("/")
    except OSError:
        pass
    return None


def _gpu_devices(policy, allow_no_gpu: bool):
    """GPU allocation per adopted agent (gpu.devices; `orchestrator`: the job's)."""
    return GpuDevices.from_policy(policy, allow_no_gpu=allow_no_gpu)


def run_daemon(opts: DaemonOptions) -> int:
    return Daemon(opts).run()
