"""Live node state shared by the controller, the metrics exporter and `top`.

The controller (run/daemon) updates it; Prometheus collectors and the state
API read a consistent snapshot under the lock on each scrape/request.
Agent names come from the policy/CLI and rule ids from the policy: both are
bounded sets, safe as metric labels. Nothing agent-supplied is a key here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

RECENT = 50


@dataclass
class GpuUse:
    device: int
    uuid: str
    memory_bytes: int
    sm_util: float | None      # percent, None = unavailable (e.g. MIG)


@dataclass
class AgentState:
    name: str
    cgroup: str
    agent_id: int
    started_at: float = field(default_factory=time.time)
    pids: int = 0
    cpu_usage_seconds: float = 0.0
    cpu_limit_cores: float | None = None
    memory_bytes: int = 0
    memory_limit_bytes: int | None = None
    gpu: list[GpuUse] = field(default_factory=list)
    frozen: bool = False
    throttled: bool = False
    labels: dict = field(default_factory=dict)   # per-episode labels (core/labels.py): never metric labels
    # recent items are dicts of already-escaped strings / numbers
    connections: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    violations: deque = field(default_factory=lambda: deque(maxlen=RECENT))


@dataclass
class NodeState:
    policy_name: str = ""
    mode: str = "enforce"
    started_at: float = field(default_factory=time.time)
    agents: dict[str, AgentState] = field(default_factory=dict)
    events_total: Counter = field(default_factory=Counter)       # (agent, kind)
    violations_total: Counter = field(default_factory=Counter)   # (agent, rule)
    actions_total: Counter = field(default_factory=Counter)      # (agent, action)
    lost_kernel: int = 0
    lost_user: int = 0             # records user space could not decode
    lost_by_agent: Counter = field(default_factory=Counter)      # agent -> records the kernel lost
    loss_freezes: Counter = field(default_factory=Counter)       # agent -> freezes after a loss
    handler_errors: int = 0        # records (or their decisions) the event handler failed on
    probes: dict[str, str] = field(default_factory=dict)         # hook -> "attached" | "unavailable" | ...
    probes_needed: set[str] = field(default_factory=set)         # hooks the policy needs (core/hooks_needed.py)
    gpu_available: bool = False
    gpu_status: str = "unavailable"
    # GPU processes gone from /proc that no process record names (gpu/loop.py):
    # their utilisation may have been an agent's, and counts toward no budget
    gpu_unattributed: int = 0
    reload_ok: bool = True                   # the last policy (re)load succeeded
    reload_success_ts: float = field(default_factory=time.time)   # when a policy was last loaded
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def snapshot(self) -> dict:
        """A JSON-ready copy, taken under the lock."""
        with self.lock:
            return {
                "policy": self.policy_name,
                "mode": self.mode,
                "started_at": self.started_at,
                "lost_events": {"kernel": self.lost_kernel, "user": self.lost_user},
                "handler_errors": self.handler_errors,
                "lost_by_agent": dict(self.lost_by_agent),
                "loss_freezes": dict(self.loss_freezes),
                "reload": {"ok": self.reload_ok, "success_ts": self.reload_success_ts},
                "probes": dict(self.probes),
                "probes_needed": sorted(self.probes_needed),
                "gpu": {"available": self.gpu_available, "status": self.gpu_status,
                        "unattributed": self.gpu_unattributed},
                "agents": [
                    {
                        "name": a.name, "cgroup": a.cgroup, "agent_id": a.agent_id,
                        "started_at": a.started_at, "pids": a.pids,
                        "cpu_usage_seconds": a.cpu_usage_seconds, "cpu_limit_cores": a.cpu_limit_cores,
                        "memory_bytes": a.memory_bytes, "memory_limit_bytes": a.memory_limit_bytes,
                        "gpu": [vars(g).copy() for g in a.gpu],
                        "frozen": a.frozen, "throttled": a.throttled, "labels": dict(a.labels),
                        "connections": list(a.connections), "violations": list(a.violations),
                        "events": {k: v for (ag, k), v in self.events_total.items() if ag == a.name},
                    }
                    for a in self.agents.values()
                ],
                "totals": {
                    "events": [{"agent": a, "kind": k, "count": v} for (a, k), v in self.events_total.items()],
                    "violations": [{"agent": a, "rule": r, "count": v} for (a, r), v in self.violations_total.items()],
                    "actions": [{"agent": a, "action": x, "count": v} for (a, x), v in self.actions_total.items()],
                },
            }
