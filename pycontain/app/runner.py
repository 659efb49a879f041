"""`pycontain run`: check the input, then start the agent through the node
daemon (app/daemon_run.py) or, when none answers or --no-daemon, with this
run's own probes (app/standalone.py, imported only then).

Bad input costs nothing: the name, the policy, CMD, the servers' addresses,
the user and the cgroup parent are checked before a daemon is asked or
anything is loaded.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core.errors import CommandNotFound, EnvironmentProblem, UsageError
from ..core.policy import builtin_policy, load_policy
from .inputs import check_cgroup_parent, check_serving, check_user
from .run_options import RunOptions

if TYPE_CHECKING:
    from .edges import Edges

NAME_OK = "abcdefghijklmnopqrstuvwxyz0123456789_.-"


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
    # only now: the standalone run's edges (BPF loader, servers, NVML) cost
    # ~90 ms of imports that a run through the daemon does not need
    from .standalone import AgentRun, run_gpu_devices
    gpu_devices = run_gpu_devices(policy, opts)   # exit 2 on an unknown GPU, before any probe
    return AgentRun(cmd, opts, policy, edges, gpu_devices).run()
