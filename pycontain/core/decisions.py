"""What the engine returns: violations and the actions they call for.

The engine is pure: events, samples and the time go in, a list of
:class:`Decision` comes out. Actuators (pycontain/actuate/actuators.py) carry the
actions out; the audit log and metrics record both.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field


# Not enum.StrEnum (ruff UP042): StrEnum's str() and format() give the value
# ("alert"), this class's give the name ("Action.ALERT"), which messages show.
class Action(str, enum.Enum):  # noqa: UP042
    ALERT = "alert"            # record only
    DENY = "deny"              # already enforced in the kernel (EPERM / drop / SIGKILL at exec)
    KILL_PROCESS = "kill-process"  # SIGKILL one process (pid + start time checked)
    THROTTLE = "throttle"      # lower the agent's CPU allowance / GPU duty cycle
    FREEZE = "freeze"          # freeze the agent's cgroup
    THAW = "thaw"
    KILL = "kill"              # kill every process of the agent (cgroup.kill)


# issue 10: an agent task left its agent's cgroup (ebpf/boundary.c)
BOUNDARY_RULE = "boundary.escape"

# escalation ladder, weakest first
LADDER = (Action.ALERT, Action.THROTTLE, Action.FREEZE, Action.KILL)

DEFAULT_DUTY_CYCLE = 0.5
DEFAULT_DUTY_PERIOD_S = 1.0


@dataclass(frozen=True)
class GpuThrottle:
    """How a THROTTLE holds down an agent's GPU use: a GPU cannot be capped
    directly, so the actuator duty-cycles the agent's cgroup (freeze/thaw)."""

    duty_cycle: float = DEFAULT_DUTY_CYCLE     # fraction of each period the agent may run
    period_s: float = DEFAULT_DUTY_PERIOD_S


@dataclass(frozen=True)
class GpuDetail:
    """What a GPU breach carries through its decisions (None: not known / not set)."""

    throttle: GpuThrottle | None = None        # set: a THROTTLE (and its THAW) concerns the GPU too
    device: int | None = None                  # gpu.program, gpu.correlation: the GPU the process uses
    sm_util: float | None = None               # gpu.sm_util: the window's average, percent
    memory_bytes: int | None = None            # gpu.memory: the agent's GPU memory

    def merged(self, newer: GpuDetail) -> GpuDetail:
        """The newer report's values where it has them, these elsewhere."""
        return dataclasses.replace(self, **{f.name: v for f in dataclasses.fields(newer)
                                            if (v := getattr(newer, f.name)) is not None})


@dataclass(frozen=True)
class Decision:
    agent: str
    rule: str                  # stable rule id, e.g. "exec.deny[0]", "budget.gpu.sm"
    action: Action
    reason: str                # human sentence; agent-supplied parts already escaped
    pid: int | None = None
    start_ns: int | None = None  # with pid: the process key the action targets
    monitor: bool = False      # policy in monitor mode: record, do not act
    gpu: GpuDetail | None = field(default=None, compare=False, hash=False)  # GPU breaches only


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
    gpu: GpuDetail | None = field(default=None, compare=False, hash=False)
