"""A standalone `pycontain run` (no node daemon answers, or --no-daemon):
this process loads its own probes, contains CMD, supervises and tears down.

Order matters: the probes are attached and the deny maps written before the
agent cgroup is tracked; the agent is launched into an already-tracked
cgroup, so there is no instant at which it runs unwatched; a watchdog
outside the agent kills it if pycontain itself dies. Input was checked by
app/runner.py before this module is imported: a run through the daemon
never imports it (its edges cost ~90 ms of imports).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ..actuate.cgroups import AgentCgroup
from ..actuate.dynamic_user import DynamicUser, dynamic_user
from ..actuate.launch import launch
from ..actuate.watchdog import Watchdog
from ..gpu.devices import GpuDevices
from ..observe.audit import open_audit
from ..observe.report import Reporter, progress_printer
from .edges import Edges
from .run_options import RunOptions, exit_status
from .session import Session
from .stopping import Stopping, kill_whole_agent


class AgentRun:
    """One `pycontain run`: set up, launch, supervise, tear down."""

    def __init__(self, cmd: list[str], opts: RunOptions, policy, edges: Edges | None = None,
                 gpu_devices: GpuDevices | None = None):
        self.cmd, self.opts, self.policy = cmd, opts, policy
        self.reporter = Reporter(as_json=opts.as_json, verbose=opts.verbose)
        self.session = Session(policy, audit=open_audit(opts.audit_log), report=self.reporter.record,
                               progress=progress_printer(opts.verbose), allow_no_gpu=opts.allow_no_gpu,
                               edges=edges, gpu_devices=gpu_devices)
        self.gpu_devices = gpu_devices
        self.cg: AgentCgroup | None = None
        self.watchdog: Watchdog | None = None
        self.proc: subprocess.Popen | None = None
        self.stopping = Stopping(opts.stop_timeout, self.reporter.note,
                                 lambda: kill_whole_agent(self.cg, self.proc))
        self.dynamic: DynamicUser | None = None

    def run(self) -> int:
        self.session.on_signals(self._on_signal, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
        try:
            cg = self._contain()
            env = self.gpu_devices.launch_env(self.opts.name) if self.gpu_devices else None
            self.dynamic = dynamic_user(self.opts.user, self.policy.privileges)
            self.proc = proc = launch(self.cmd, cg, user=self.opts.user, env=env, privileges=self.policy.privileges,
                                      identity=self.dynamic.identity if self.dynamic else None)
            self._supervise(proc)
            code = exit_status(proc.returncode)
            self.reporter.finished(self.opts.name, code)
            return code
        finally:
            self._teardown()

    def _on_signal(self, signum, _frame) -> None:
        """Like `docker stop` (app/stopping.py): the signal goes to the agent
        (SIGHUP as SIGTERM)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.stopping.signalled(signum)
            try:
                os.killpg(proc.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _contain(self) -> AgentCgroup:
        """Probes and maps first, then the cgroup, its watchdog and tracking,
        then the servers: the agent is launched into a watched cgroup."""
        s, opts = self.session, self.opts
        s.start()
        self.cg = cg = AgentCgroup.create(opts.name, parent=opts.cgroup_parent)
        self.watchdog = Watchdog.start([cg])
        s.ctl.add_agent(opts.name, cg)
        s.serve(socket_path=opts.socket_path, metrics_port=opts.metrics_port, metrics_addr=opts.metrics_addr)
        self.reporter.ready(opts.name, self.policy, s.ctl, cg)
        return cg

    def _supervise(self, proc: subprocess.Popen) -> None:
        checked = time.monotonic()
        while proc.poll() is None:
            self.session.step(100)
            self.stopping.check()
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                self._keep_watchdog()
        self.session.step(50)               # drain what the agent's last moments produced

    def _keep_watchdog(self) -> None:
        assert self.watchdog is not None and self.cg is not None    # set by _contain
        if not self.watchdog.alive():
            # fail-closed needs a live watchdog: replace one that died
            self.reporter.note("watchdog died; starting a new one")
            self.watchdog = Watchdog.start([self.cg])

    def _teardown(self) -> None:
        s = self.session
        s.stop_serving()
        if self.cg is not None:
            if self.cg.pids():
                self.reporter.note(f"killing {len(self.cg.pids())} process(es) the agent left behind")
            # remove the cgroup first, then untrack: the programs stay with the
            # dying cgroup for any socket the agent left behind
            self.cg.remove()
            if self.opts.name in s.ctl.cgroups:
                s.ctl.remove_agent(self.opts.name)
        if self.dynamic is not None:
            self.dynamic.release()       # its processes died with the cgroup
        s.ctl.close()
        if self.watchdog is not None:
            self.watchdog.disarm()
            self.watchdog.close()
        s.audit.close()


def run_gpu_devices(policy, opts: RunOptions) -> GpuDevices:
    """GPU allocation for the agent: --gpus, else the policy's gpu.devices."""
    devices = GpuDevices.from_policy(policy, allow_no_gpu=opts.allow_no_gpu)
    devices.request(opts.name, opts.gpus)
    return devices
