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
import sys
import time
from dataclasses import dataclass

from ..core.errors import CommandNotFound, EnvironmentProblem, UsageError
from ..observe.state import NodeState
from ..observe.report import Reporter, progress_printer

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


def load_run_policy(opts: RunOptions):
    from ..core.policy import builtin_policy, load_policy
    policy = load_policy(opts.policy_path) if opts.policy_path else builtin_policy("default")
    if opts.monitor:
        from dataclasses import replace
        policy = replace(policy, mode="monitor")
    return policy


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


def run_agent(cmd: list[str], opts: RunOptions) -> int:
    check_name(opts.name)
    policy = load_run_policy(opts)           # exit 2 on a bad policy, before anything else
    resolve_cmd(cmd)                         # exit 127 before anything is loaded
    require_root()
    gpu_devices = run_gpu_devices(policy, opts)   # exit 2 on an unknown GPU, before any probe

    from ..observe.audit import open_audit
    from ..actuate.cgroups import AgentCgroup
    from .controller import Controller
    from ..actuate.launch import launch
    from ..actuate.watchdog import Watchdog

    reporter = Reporter(as_json=opts.as_json, verbose=opts.verbose)
    audit = open_audit(opts.audit_log)
    state = NodeState()
    ctl = Controller(policy, audit=audit, state=state, report=reporter.record,
                     allow_no_gpu=opts.allow_no_gpu, progress=progress_printer(opts.verbose),
                     gpu_devices=gpu_devices)
    cg = watchdog = proc = server = metrics = None
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        ctl.start()
        cg = AgentCgroup.create(opts.name, parent=opts.cgroup_parent)
        watchdog = Watchdog.start([cg])
        ctl.add_agent(opts.name, cg)
        if opts.metrics_port:
            from ..observe.metrics import start_metrics_server
            metrics, _ = start_metrics_server(opts.metrics_port, state, addr=opts.metrics_addr)
        if opts.socket_path:
            from ..observe.state_api import StateServer
            server = StateServer(state, opts.socket_path, handlers=_agent_handlers(ctl))
            server.start()
        reporter.ready(opts.name, policy, ctl, cg)
        proc = launch(cmd, cg, user=opts.user, env=gpu_devices.launch_env(opts.name))
        checked = time.monotonic()
        while proc.poll() is None:
            ctl.step(100)
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                if not watchdog.alive():
                    # fail-closed needs a live watchdog: replace one that died
                    reporter.note("watchdog died; starting a new one")
                    watchdog = Watchdog.start([cg])
        # drain what the agent's last moments produced
        ctl.step(50)
        code = exit_status(proc.returncode)
        reporter.finished(opts.name, code)
        return code
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if server:
            server.close()
        if metrics:
            try:
                metrics.shutdown()
            except Exception:
                pass
        if cg is not None:
            if cg.pids():
                reporter.note(f"killing {len(cg.pids())} process(es) the agent left behind")
            # remove the cgroup first, then untrack: the programs stay with the
            # dying cgroup for any socket the agent left behind
            cg.remove()
            if opts.name in ctl.cgroups:
                ctl.remove_agent(opts.name)
        ctl.close()
        if watchdog is not None:
            watchdog.disarm()
            watchdog.close()
        audit.close()


def run_gpu_devices(policy, opts: RunOptions):
    """GPU allocation for the agent: --gpus, else the policy's gpu.devices."""
    from ..gpu.devices import GpuDevices
    devices = GpuDevices.from_policy(policy, allow_no_gpu=opts.allow_no_gpu)
    devices.request(opts.name, opts.gpus)
    return devices


def _agent_handlers(ctl):
    from ..core.decisions import Action, Decision

    def act(verb):
        def handler(name: str, body: dict | None = None) -> dict:
            if name not in ctl.cgroups:
                return {"ok": False, "error": f"no agent {name!r}"}
            d = Decision(agent=name, rule="manual", action=Action(verb), reason=f"manual {verb} via API")
            ctl.apply([d])
            return {"ok": True, "agent": name, "action": verb}
        return handler

    return {"kill": act("kill"), "freeze": act("freeze"), "thaw": act("thaw")}
