"""What the engine returns: violations and the actions they call for.

The engine is pure: events, samples and the time go in, a list of
:class:`Decision` comes out. Actuators (pycontain/actuate/actuators.py) carry the
actions out; the audit log and metrics record both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Action(str, enum.Enum):
    ALERT = "alert"            # record only
    DENY = "deny"              # already enforced in the kernel (EPERM / drop / SIGKILL at exec)
    KILL_PROCESS = "kill-process"  # SIGKILL one process (pid + start time checked)
    THROTTLE = "throttle"      # lower the agent's CPU allowance / GPU duty cycle
    FREEZE = "freeze"          # freeze the agent's cgroup
    THAW = "thaw"
    KILL = "kill"              # kill every process of the agent (cgroup.kill)


# escalation ladder, weakest first
LADDER = (Action.ALERT, Action.THROTTLE, Action.FREEZE, Action.KILL)


@dataclass(frozen=True)
class Decision:
    agent: str
    rule: str                  # stable rule id, e.g. "exec.deny[0]", "budget.gpu.sm"
    action: Action
    reason: str                # human sentence; agent-supplied parts already escaped
    pid: int | None = None
    start_ns: int | None = None  # with pid: the process key the action targets
    monitor: bool = False      # policy in monitor mode: record, do not act
    detail: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Breach:
    """A budget or rule is broken right now; the engine turns breaches into
    decisions through the policy's escalation ladder and grace windows."""

    agent: str
    rule: str                  # e.g. "budget.gpu.sm_util", "gpu.program", "gpu.correlation"
    action_key: str            # key into policy.actions, e.g. "gpu_util"
    reason: str
    pid: int | None = None
    start_ns: int | None = None
    detail: dict = field(default_factory=dict, compare=False, hash=False)
