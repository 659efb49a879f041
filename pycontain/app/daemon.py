"""`pycontain daemon`: node-wide containment of agents started by others.

It scans for cgroups that match the policy's selectors, tracks them with the
same probes and engine as `pycontain run`, serves the state API (top, status,
kill/freeze/thaw, adopt/release) on a root-only Unix socket, and reloads the
policy on SIGHUP. An invalid new policy is rejected and the old one stays in
force; a valid one is swapped in by rewriting the maps in place, so there is
no gap in enforcement.
"""

from __future__ import annotations

import json
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
from ..kernel.pins import pin_root, release_all
from ..observe.audit import open_audit
from ..observe.report import Reporter, progress_printer
from .agent_api import AgentStarter, home_name
from .agents import ADOPT, SCAN, AgentRegistry, cgroup_id
from .edges import Edges
from .inputs import check_serving
from .policy_watch import DEFAULT_POLL_S, PolicyWatch
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
    pin: bool = True          # pin attachments in bpffs: enforcement outlives the daemon (kernel/pins.py)
    audit_max_bytes: int | None = None   # rotate the audit log at this size (observe/audit.py)
    audit_keep: int = 5
    policy_poll: float = DEFAULT_POLL_S  # seconds between checks of the policy file (0: SIGHUP only)


class Daemon:
    def __init__(self, opts: DaemonOptions, edges: Edges | None = None):
        self.opts = opts
        self.policy = _node_policy(opts.policy_path)
        self.watch = PolicyWatch(opts.policy_path, opts.policy_poll)     # a ConfigMap edit reloads on its own
        check_serving(audit_log=opts.audit_log, metrics_port=opts.metrics_port, metrics_addr=opts.metrics_addr,
                      socket_path=opts.socket_path)
        self.reporter = Reporter(verbose=opts.verbose)
        audit = open_audit(opts.audit_log, opts.audit_max_bytes, opts.audit_keep)
        self.session = Session(self.policy, audit=audit, report=self.reporter.record,
                               progress=progress_printer(opts.verbose), allow_no_gpu=opts.allow_no_gpu,
                               edges=edges, gpu_devices=_gpu_devices(self.policy, opts.allow_no_gpu))
        self.ctl, self.state, self.audit = self.session.ctl, self.session.state, self.session.audit
        self.lock = self.session.lock        # API threads vs the main loop
        self.agents = AgentRegistry()         # by cgroup id: adopted and/or selected
        self._reload = False
        self._stop = False
        self._last_scan = 0.0
        self._births: list = []               # cgroup-birth events to adopt after the poll
        self.starter = AgentStarter(self.ctl, self.lock)    # agents started through the API (run, client)
        self._taken_over = False
        if opts.pin:
            self.ctl.pin_root = pin_root()

    # ---- API handlers (called from server threads) --------------------------

    def _adopt(self, body: dict) -> dict:
        path, name = str(body.get("cgroup", "")), str(body.get("name", ""))
        if not name or not path:
            return {"ok": False, "error": "adopt needs cgroup and name"}
        full = os.path.realpath(path if os.path.isabs(path) else os.path.join(self._cgroup2_root(), path))
        if not os.path.isdir(full):
            return {"ok": False, "error": f"no cgroup {path!r}"}
        with self.lock:
            cid = cgroup_id(full)
            other = self.agents.find(name)
            if other is not None and other != cid:
                return {"ok": False, "error": f"the name {name!r} already names the cgroup "
                                             f"{self.agents.tracked[other].path}"}
            if cid in self.agents.tracked:      # one cgroup, one agent: keep its first name
                t = self.agents.add(cid, name, full, ADOPT)
                self._save_adopted()
                return {"ok": True, "agent": t.name, "cgroup": full, "already": True}
            self.ctl.add_agent(name, AgentCgroup.adopt(full, name))
            self.agents.add(cid, name, full, ADOPT)
            self._save_adopted()
        return {"ok": True, "agent": name, "cgroup": full}

    def _release(self, body: dict) -> dict:
        name = str(body.get("name", ""))
        with self.lock:
            cid = self.agents.find(name)
            if cid is None:
                return {"ok": False, "error": f"no agent {name!r}"}
            t = self.agents.remove(cid, released=True)
            assert t is not None
            self.ctl.remove_agent(t.name)
            self._save_adopted()
        return {"ok": True, "agent": t.name, "released": [{"agent": t.name, "cgroup": t.path,
                                                           "names": sorted({t.name, *t.aliases})}]}

    # ---- discovery ------------------------------------------------------------

    @staticmethod
    def _cgroup2_root() -> str:
        return detect_layout().unified

    def scan(self) -> None:
        root = self._cgroup2_root()
        own = _own_cgroup2(root)
        matches = find_agents(self.policy.agents, root, exclude={own} if own else None)
        with self.lock:
            live: dict[int, tuple[str, str]] = {}
            for m in matches:
                try:
                    live[cgroup_id(m.path)] = (m.name, os.path.realpath(m.path))
                except OSError:
                    continue
            self.agents.prune_released()
            for cid, t in list(self.agents.tracked.items()):
                gone = not os.path.isdir(t.path)
                if gone or (t.sources == {SCAN} and cid not in live):
                    self.agents.remove(cid)
                    self.ctl.remove_agent(t.name)
            for cid, (name, path) in live.items():
                if cid in self.agents.tracked:
                    self.agents.add(cid, name, path, SCAN)
                    continue
                if cid in self.agents.released or name in self.ctl.cgroups:
                    continue
                try:
                    self.ctl.add_agent(name, AgentCgroup.adopt(path, name))
                    self.agents.add(cid, name, path, SCAN)
                except (OSError, PycontainError) as e:
                    self.reporter.note(f"cannot contain {path}: {e}")

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
            name = clean_name(f"{self.policy.agents[ev.selector].name}:{os.path.basename(path)}")
            with self.lock:
                try:
                    cid = cgroup_id(path)
                except OSError:
                    continue
                if cid in self.agents.tracked or cid in self.agents.released or name in self.ctl.cgroups:
                    continue
                try:
                    self.ctl.add_agent(name, AgentCgroup.adopt(path, name), agent_id=ev.h.agent_id)
                    self.agents.add(cid, name, os.path.realpath(path), SCAN)
                except (OSError, PycontainError) as e:
                    self.reporter.note(f"cannot adopt {path}: {e}")

    # ---- reload ------------------------------------------------------------

    def reload(self) -> bool:
        """Load and swap in the policy file. Any failure (invalid policy, a
        map write the kernel refuses) keeps the old policy in force: the
        daemon never dies of a reload."""
        try:
            new = _node_policy(self.opts.policy_path)
            with self.lock:
                self.ctl.reload(new)
                self.policy = new
                self.arm_birth()
        except Exception as e:       # noqa: BLE001 - whatever failed, keep containing
            msg = e.message if isinstance(e, PycontainError) else f"{type(e).__name__}: {e}"
            log.debug("reload failed", exc_info=True)
            self.reporter.note(f"policy reload rejected, the old policy stays in force: {msg}")
            self.audit.write({"ts": time.time(), "agent": "-", "kind": "policy-reload-rejected",
                              "pid": None, "error": msg})
            self._reload_result(False)
            return False
        self.reporter.note(f"policy reloaded: {new.name}")
        self._reload_result(True)
        return True

    def _reload_result(self, ok: bool) -> None:
        with self.state.lock:
            self.state.reload_ok = ok
            if ok:
                self.state.reload_success_ts = time.time()

    # ---- main ----------------------------------------------------------------

    # ---- takeover of what an earlier daemon pinned ---------------------------

    def _take_over(self) -> None:
        """Re-adopt what the earlier daemon adopted, then retire its pins: the
        scan has tracked every selected cgroup by now, so this generation
        enforces everything the old one did (no gap)."""
        for name, path in _load_adopted(self.opts.socket_path).items():
            if os.path.isdir(path):
                self._adopt({"cgroup": path, "name": name})
        assert self.ctl.probes is not None
        with self.lock:
            gone = self.ctl.probes.retire_older_pins()
        if gone:
            self.reporter.note(f"took over from {len(gone)} earlier daemon generation(s)")
        self._taken_over = True

    def _save_adopted(self) -> None:
        path = _adopted_file(self.opts.socket_path)
        try:
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(self.agents.adopted(), fh)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot save the adopted agents to %s: %s", path, e)

    def run(self) -> int:
        if os.geteuid() != 0:
            raise EnvironmentProblem("pycontain daemon needs root (BPF programs, cgroups)")

        def on_hup(*_):
            self._reload = True

        def on_term(*_):
            self._stop = True

        s = self.session
        s.on_signals(on_hup, (signal.SIGHUP,))
        s.on_signals(lambda *_: self.audit.reopen(), (signal.SIGUSR1,))     # logrotate's postrotate
        s.on_signals(on_term, (signal.SIGTERM, signal.SIGINT))
        self.ctl.on_birth = self._on_birth
        s.start()
        self.arm_birth()
        self._prepare_starts()
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
            self.starter.close()     # agents this daemon started lose containment with it: end them (at once)
            with self.lock:
                # leave adopted agents running: they belong to someone else.
                # Pinned, their kernel enforcement stays until a new daemon
                # takes over or `pycontain daemon --release`.
                if not self.opts.pin:
                    for name in list(self.ctl.cgroups):
                        self.ctl.remove_agent(name)
            s.close()

    def _prepare_starts(self) -> None:
        """The started agents' home and their watchdog; before serving and
        before the takeover retires an earlier generation's pins, so what
        that daemon started and left running is ended, never left running
        with no program of any generation containing it."""
        why = self.starter.prepare(self.ctl.probes, home_name(self.opts.socket_path, DaemonOptions.socket_path))
        if why:
            self.reporter.note(why)
        ended = self.starter.arm()
        if ended:
            self.reporter.note(f"ended {len(ended)} agent(s) an earlier daemon started and left running "
                               "(their policy died with it)")
            self.audit.write({"ts": time.time(), "agent": "-", "kind": "leftover-agents-ended",
                              "pid": None, "cgroups": ended})

    def _tick(self) -> None:
        now = time.monotonic()
        if self._reload or self.watch.changed(now):
            self._reload = False
            self.reload()
        if now - self._last_scan >= self.opts.scan_interval:
            self._last_scan = now
            self.scan()
            self.starter.sweep()
            if not self._taken_over:
                self._take_over()
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


def _node_policy(path: str | None):
    return load_policy(path) if path else builtin_policy("default")


def _adopted_file(socket_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(socket_path)), "adopted.json")


def _load_adopted(socket_path: str) -> dict[str, str]:
    """The adopted agents (name -> cgroup) the last daemon saved next to its
    socket, so that a restarted daemon takes them over with the pins."""
    try:
        with open(_adopted_file(socket_path)) as fh:
            data = json.load(fh)
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def release_pinned(socket_path: str) -> list[str]:
    """`pycontain daemon --release`: remove every pin and the adopted list."""
    gone = release_all()
    try:
        os.unlink(_adopted_file(socket_path))
    except OSError:
        pass
    return gone


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
