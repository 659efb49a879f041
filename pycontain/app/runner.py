"""`pycontain run`: start one contained agent, supervise it, tear down.

Order matters: the policy is validated and CMD resolved before anything is
loaded (bad input costs nothing); the probes are attached and the deny maps
written before the agent cgroup is tracked; the agent is launched into an
already-tracked cgroup, so there is no instant at which it runs unwatched; a
watchdog outside the agent kills it if pycontain itself dies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace

from ..actuate.cgroups import AgentCgroup
from ..actuate.dynamic_user import DynamicUser, dynamic_user
from ..actuate.launch import launch
from ..actuate.watchdog import Watchdog
from ..core.errors import CommandNotFound, EnvironmentProblem, UsageError
from ..core.policy import builtin_policy, load_policy
from ..gpu.devices import GpuDevices
from ..observe.audit import open_audit
from ..observe.report import Reporter, progress_printer
from .edges import Edges
from .inputs import check_cgroup_parent, check_serving, check_user
from .session import Session

NAME_OK = "abcdefghijklmnopqrstuvwxyz0123456789_.-"


@dataclass
class RunOptions:
    policy_path: str | None = None
    name: str = "agent"
    audit_log: str | None = None
    user: str | None = None
    monitor: bool = False
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    socket_path: str | None = None
    cgroup_parent: str | None = None
    allow_no_gpu: bool = False
    gpus: str | None = None                  # --gpus: indexes / UUIDs / all / none
    as_json: bool = False
    verbose: int = 0
    no_daemon: bool = False                  # --no-daemon: always load our own probes
    daemon_only: bool = False                # --daemon-only: exit 1 when no daemon answers
    daemon_socket: str | None = None         # the node daemon's state API (default: agent_client)
    labels: tuple = ()                       # --label KEY=VALUE: per-episode labels (daemon path)
    stop_timeout: float = 10.0               # SIGTERM/SIGINT -> agent; after this long, the whole agent is killed


def load_run_policy(opts: RunOptions):
    policy = load_policy(opts.policy_path) if opts.policy_path else builtin_policy("default")
    if opts.monitor:
        policy = replace(policy, mode="monitor")
    return policy


# options that need a controller of this run's own (its own policy, log,
# servers or cgroup placement): they imply --no-daemon
OWN_PROBE_OPTIONS = (("policy_path", "--policy"), ("monitor", "--monitor"), ("audit_log", "--audit-log"),
                     ("socket_path", "--socket"), ("metrics_port", "--metrics-port"),
                     ("cgroup_parent", "--cgroup-parent"), ("gpus", "--gpus"))


def own_probe_options(opts: RunOptions) -> list[str]:
    own = [flag for attr, flag in OWN_PROBE_OPTIONS if getattr(opts, attr)]
    if opts.no_daemon and opts.daemon_only:
        raise UsageError("--no-daemon and --daemon-only exclude each other")
    if opts.daemon_only and own:
        raise UsageError(f"--daemon-only with {own[0]}: agents started through the daemon get the node policy, "
                         "log and servers", f"drop {own[0]}, or run with --no-daemon")
    return own


def check_name(name: str) -> None:
    if not name or len(name) > 32 or name[0] in "_.-" or any(c not in NAME_OK for c in name):
        raise UsageError(f"--name {name!r}: use 1-32 characters of [a-z0-9_.-], starting with a letter or digit",
                         "agent names become metric labels, so they are kept small and plain")


def resolve_cmd(cmd: list[str]) -> None:
    if not cmd:
        raise UsageError("no command given", "pycontain run [OPTIONS] -- CMD [ARG...]")
    prog = cmd[0]
    if "/" in prog:
        if not os.path.exists(prog):
            raise CommandNotFound(f"{prog}: command not found")
        if not os.access(prog, os.X_OK) or os.path.isdir(prog):
            raise CommandNotFound(f"{prog}: not executable")
    elif shutil.which(prog) is None:
        raise CommandNotFound(f"{prog}: command not found", "check the name, or give a full path")


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("pycontain run needs root (it loads BPF programs and creates cgroups)")


def exit_status(returncode: int) -> int:
    """The agent's own status, or 128+N if signal N ended it (shell convention)."""
    return 128 - returncode if returncode < 0 else returncode


def run_agent(cmd: list[str], opts: RunOptions, edges: Edges | None = None) -> int:
    check_name(opts.name)
    own = own_probe_options(opts)            # exit 2 on --daemon-only with options it cannot honour
    policy = load_run_policy(opts)           # exit 2 on a bad policy, before anything else
    resolve_cmd(cmd)                         # exit 127 before anything is loaded
    check_serving(audit_log=opts.audit_log, metrics_port=opts.metrics_port, metrics_addr=opts.metrics_addr,
                  socket_path=opts.socket_path)
    check_user(opts.user)
    check_cgroup_parent(opts.cgroup_parent)
    if not opts.no_daemon and not own and edges is None:
        from .daemon_run import try_daemon_run
        code = try_daemon_run(cmd, opts)     # None: no daemon answers (said in one line)
        if code is not None:
            return code
    require_root()
    gpu_devices = run_gpu_devices(policy, opts)   # exit 2 on an unknown GPU, before any probe
    return AgentRun(cmd, opts, policy, edges, gpu_devices).run()


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
        self._stop_deadline: float | None = None
        self._stop_killed = False
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
        """Like `docker stop`: the signal goes to the agent (SIGHUP as
        SIGTERM); if it has not exited after --stop-timeout, every process in
        its cgroup is killed (_enforce_stop), traps or not."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.opts.stop_timeout
                self.reporter.note(f"stopping the agent ({signal.Signals(signum).name}; killed after "
                                   f"{self.opts.stop_timeout:g}s)")
            try:
                os.killpg(proc.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _enforce_stop(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline or self._stop_killed:
            return
        self._stop_killed = True
        self.reporter.note(f"the agent did not stop within {self.opts.stop_timeout:g}s: killing it")
        if self.cg is not None:
            self.cg.kill()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
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
            self._enforce_stop()
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
