"""GPU rules (pure): GPU diversion and GPU budgets, as Breach values.

Input: a GpuSample plus the GPU processes attributed to agents (processes
outside every agent never get here). Output: breaches; the engine runs them
through the policy's escalation ladder.

* gpu.memory       — an agent's GPU memory (all devices) over budget
* gpu.sm_util      — an agent's SM utilisation, averaged over the window, over budget
* gpu.program      — a program not on the allow-list appears on a GPU (immediately)
* gpu.correlation  — a process that started after an outbound connection to an
                     unapproved destination uses a GPU: the ROME signature
"""

from __future__ import annotations

import fnmatch
import os
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .decisions import Breach, GpuDetail, GpuThrottle
from .samples import GpuSample
from .text import safe_text

if TYPE_CHECKING:   # annotations only: the rule is imported when the policy turns it on
    from .gpu_policy_extra import SignaturePolicy
    from .gpu_signature import SignatureRule


@dataclass(frozen=True)
class AttributedGpuProcess:
    agent: str
    pid: int
    start_ns: int | None
    device: int
    used_memory_bytes: int | None
    sm_util: float | None
    filename: bytes = b""
    argv: tuple[bytes, ...] = ()
    unapproved_connect_ns: int | None = None
    exec_ts_ns: int = 0
    # paths of symlinks an administrator owns (root, in a directory only root
    # may write) through which the process was exec'd to `filename`, the
    # resolved image: `python3` -> `python3.11` keeps its name, a link the
    # agent made does not (gpu/attribution.py)
    aliases: tuple[bytes, ...] = ()


def device_busy(total: float, sm_util: float) -> float:
    """SM % of a device with one more process's peak added: peaks of
    processes that followed each other within one interval add up too, and
    a device is never more than fully busy."""
    return min(100.0, total + sm_util)


def path_glob_match(path: str, pat: str) -> bool:
    """fnmatch, component by component: `*`, `?` and `[...]` never match a
    `/`, so `/usr/bin/*` names the files in /usr/bin, not every file below
    it (nor `/usr/bin/x/../../../tmp/m`: judged paths are resolved anyway)."""
    parts, pats = path.split("/"), pat.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, p) for a, p in zip(parts, pats, strict=True))


def program_allowed(filename: bytes, allowed: tuple[str, ...], aliases: tuple[bytes, ...] = ()) -> bool:
    """`filename`: the resolved image the kernel runs (never the spelling the
    agent passed to execve: `..` and links of its own would choose the name
    judged); `aliases`: admin-owned links that lead to it. A glob with `/`
    matches a whole path, any other glob a basename."""
    if not allowed:
        return True
    paths = [p.decode(errors="replace") for p in (filename, *aliases) if p]
    for pat in allowed:
        for path in paths:
            if path_glob_match(path, pat) if "/" in pat else fnmatch.fnmatchcase(os.path.basename(path), pat):
                return True
    return False


class GpuRulesPolicy(Protocol):
    """What GpuRules reads of the policy's `gpu` section (core.policy.GpuPolicy);
    `signature`, when present, turns on gpu.signature."""

    @property
    def memory_bytes(self) -> int | None: ...
    @property
    def sm_util_max(self) -> float | None: ...
    @property
    def sm_util_window_s(self) -> float: ...
    @property
    def allowed_programs(self) -> tuple[str, ...]: ...
    @property
    def correlate_unapproved_connect(self) -> bool: ...
    @property
    def throttle_duty_cycle(self) -> float: ...
    @property
    def throttle_period_s(self) -> float: ...
    @property
    def sample_interval_s(self) -> float: ...
    @property
    def correlation_window_s(self) -> float: ...


class GpuRules:
    def __init__(self, policy_gpu: GpuRulesPolicy):
        self.p = policy_gpu
        # agent -> (ts, summed SM util) samples
        self._util: dict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self._signature = _signature_rule(policy_gpu)

    def _window_avg(self, agent: str, now: float, value: float | None) -> float | None:
        q = self._util[agent]
        if value is not None:
            q.append((now, value))
        while q and q[0][0] < now - self.p.sm_util_window_s:
            q.popleft()
        if not q or q[-1][0] - q[0][0] < min(self.p.sm_util_window_s, self.p.sample_interval_s * 2) * 0.5:
            return None      # not enough history yet for a sustained reading
        return sum(v for _, v in q) / len(q)

    def evaluate(self, sample: GpuSample, attributed: list[AttributedGpuProcess], now: float,
                 unapproved_at: Mapping[str, float] | None = None) -> list[Breach]:
        """`unapproved_at`: agent -> when any of its processes last made an
        unapproved connection (Engine.unapproved_at, same clock as `now`)."""
        out = self._evaluate(sample, attributed, now)
        return out + self._agent_correlation(attributed, now, unapproved_at or {}, out)

    def _agent_correlation(self, attributed: list[AttributedGpuProcess], now: float,
                           unapproved_at: Mapping[str, float], found: list[Breach]) -> list[Breach]:
        """Issue 12: an unapproved connection by ANY process of an agent, then
        GPU use by any process of that agent within correlation_window."""
        p = self.p
        if not p.correlate_unapproved_connect:
            return []
        done = {b.agent for b in found if b.rule == "gpu.correlation"}
        out: list[Breach] = []
        for x in attributed:
            t = unapproved_at.get(x.agent)
            if x.agent in done or t is None or not 0 <= now - t <= p.correlation_window_s:
                continue
            done.add(x.agent)
            prog = safe_text(x.filename or b"?", 256)
            out.append(Breach(x.agent, "gpu.correlation", "gpu_correlation",
                              f"{prog} (pid {x.pid}) uses GPU {x.device} {now - t:.0f}s after an unapproved "
                              f"outbound connection by the same agent", gpu=GpuDetail(device=x.device)))
        return out

    def _evaluate(self, sample: GpuSample, attributed: list[AttributedGpuProcess], now: float) -> list[Breach]:
        out: list[Breach] = []
        by_agent: dict[str, list[AttributedGpuProcess]] = defaultdict(list)
        for a in attributed:
            by_agent[a.agent].append(a)
        p = self.p
        for agent, procs in by_agent.items():
            mem = sum(x.used_memory_bytes or 0 for x in procs)
            if p.memory_bytes is not None and mem > p.memory_bytes:
                out.append(Breach(agent, "gpu.memory", "gpu_memory",
                                  f"agent uses {mem} bytes of GPU memory, budget {p.memory_bytes}",
                                  gpu=GpuDetail(memory_bytes=mem)))
            utils = [x.sm_util for x in procs if x.sm_util is not None]
            if p.sm_util_max is not None:
                # per-process SM shares on one device add up; several devices: the busiest
                per_dev: dict[int, float] = defaultdict(float)
                for x in procs:
                    if x.sm_util is not None:
                        per_dev[x.device] = device_busy(per_dev[x.device], x.sm_util)
                avg = self._window_avg(agent, now, max(per_dev.values()) if utils else None)
                if avg is not None and avg >= p.sm_util_max:
                    out.append(Breach(agent, "gpu.sm_util", "gpu_util",
                                      f"agent's SM utilisation averaged {avg:.0f}% over {p.sm_util_window_s:g}s, "
                                      f"budget {p.sm_util_max:g}%",
                                      gpu=GpuDetail(throttle=GpuThrottle(p.throttle_duty_cycle, p.throttle_period_s),
                                                    sm_util=avg)))
            for x in procs:
                prog = safe_text(x.filename or b"?", 256)
                if not program_allowed(x.filename, p.allowed_programs, x.aliases):
                    out.append(Breach(agent, "gpu.program", "gpu_program",
                                      f"{prog} (pid {x.pid}) uses GPU {x.device} but is not an allowed GPU program",
                                      pid=x.pid, start_ns=x.start_ns, gpu=GpuDetail(device=x.device)))
                if (p.correlate_unapproved_connect and x.unapproved_connect_ns is not None
                        and x.unapproved_connect_ns <= (x.exec_ts_ns or x.unapproved_connect_ns)):
                    out.append(Breach(agent, "gpu.correlation", "gpu_correlation",
                                      f"{prog} (pid {x.pid}) started after an unapproved outbound connection "
                                      f"and uses GPU {x.device}",
                                      pid=x.pid, start_ns=x.start_ns, gpu=GpuDetail(device=x.device)))
        if self._signature is not None:
            out += self._signature.evaluate(sample, attributed, now)
        for gone in set(self._util) - set(by_agent):
            self._window_avg(gone, now, None)
            if not self._util[gone]:
                del self._util[gone]
        return out


def _signature_rule(policy_gpu: GpuRulesPolicy) -> SignatureRule | None:
    """gpu.signature (core/gpu_signature.py), when the policy turns it on."""
    sig: SignaturePolicy | None = getattr(policy_gpu, "signature", None)
    if sig is None:
        return None
    from .gpu_signature import SignatureRule
    return SignatureRule(sig, program_allowed)
