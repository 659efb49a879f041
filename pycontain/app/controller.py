"""The controller loop shared by `pycontain run` and `pycontain daemon`.

It owns the edges (probes, cgroups, actuators, the GPU sampler, the audit log)
and feeds the pure engine: kernel events, cgroup and GPU samples and the time
go in, decisions come out and are carried out and recorded. Nothing here
decides policy.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..observe.audit import AuditLog
from ..core.decisions import Action, Decision
from ..core.events import Event, Verdict
from ..core.records import decision_records, event_record
from ..observe.state import AgentState, NodeState

log = logging.getLogger("pycontain")

SAMPLE_INTERVAL_S = 1.0


def boot_to_wall_offset() -> float:
    """Add to boot-clock seconds (bpf_ktime_get_boot_ns) to get wall-clock time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class Controller:
    def __init__(self, policy, *, audit: AuditLog, state: NodeState,
                 report: Callable[[dict], None] | None = None,
                 allow_no_gpu: bool = False,
                 progress: Callable[[str], None] | None = None,
                 trace_all: bool = False,
                 gpu_devices=None):
        self.policy = policy
        self.audit = audit
        self.state = state
        self.report = report or (lambda rec: None)
        self.allow_no_gpu = allow_no_gpu
        self.progress = progress or (lambda msg: None)
        self.trace_all = trace_all
        self.gpu_devices = gpu_devices    # gpu/devices.py GpuDevices: GPU allocation per agent, or None
        self.cgroups: dict = {}           # agent name -> AgentCgroup
        self.names: dict[int, str] = {}   # agent id -> name
        self._next_id = 1
        self.rules: dict[int, str] = {}
        self.probes = None
        self.engine = None
        self.actuator = None
        self.gpu = None                   # (sampler, rules) or None
        self.resolver = None
        self._offset = boot_to_wall_offset()
        self._last_sample = 0.0
        self._last_gpu = 0.0
        self.started_ready_s: float | None = None

    # ---- life cycle -------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        from ..actuate.actuators import Actuator
        from ..core.engine import Engine
        from ..core.kernel_rules import compile_policy
        from ..kernel.loader import Probes

        # NVML start-up (up to a second on big nodes) and DNS overlap the
        # probe compile (~1.5 s of clang): both are needed only after it
        import threading
        side: dict = {}

        def side_work():
            try:
                self.resolver = self._make_resolver()
                self._start_gpu()
            except BaseException as e:      # re-raised in this thread below
                side["error"] = e
        worker = threading.Thread(target=side_work, name="start-side", daemon=True)
        worker.start()
        self.progress("compiling and loading the BPF probes")
        self.probes = Probes(progress=self.progress, trace_all=self.trace_all)
        self.probes.on_event = self.on_event
        try:
            self.probes.load()
        finally:
            worker.join()
        if "error" in side:
            self.probes.close()
            raise side["error"]
        resolved = self.resolver.addresses if self.resolver else None
        tables = compile_policy(self.policy, resolved)
        self.probes.set_tables(tables)
        self.rules = dict(tables.rules)
        self.engine = Engine(self.policy, resolved)
        self.actuator = Actuator(self.cgroups, on_result=None)
        from ..gpu.safety import wire_gpu_safety
        wire_gpu_safety(self)                # stuck-kill reports with GPU memory, cuda-checkpoint lock
        with self.state.lock:
            self.state.policy_name = self.policy.name
            self.state.mode = self.policy.mode
            self.state.probes = dict(self.probes.hook_status())
        self.started_ready_s = time.monotonic() - t0

    def _make_resolver(self):
        try:
            from ..core.resolve import Resolver, hosts_in_policy
        except ImportError:
            return None
        hosts = hosts_in_policy(self.policy)
        if not hosts:
            return None
        import socket

        def lookup(name: str) -> list[str]:
            try:
                return sorted({ai[4][0] for ai in socket.getaddrinfo(name, None)})
            except OSError:
                return []
        r = Resolver(hosts, lookup, interval_s=self.policy.network.resolve_interval_s)
        r.refresh(time.monotonic())
        return r

    def _start_gpu(self) -> None:
        from ..gpu.nvml import Nvml
        from ..gpu.sampler import GpuSampler, check_gpu_requirement
        from ..core.gpu_rules import GpuRules
        nvml = Nvml()
        check_gpu_requirement(self.policy.gpu, self.allow_no_gpu, nvml)
        with self.state.lock:
            self.state.gpu_available = nvml.available
            self.state.gpu_status = nvml.status
        if nvml.available:
            self.gpu = (GpuSampler(nvml, interval_s=self.policy.gpu.sample_interval_s), GpuRules(self.policy.gpu))

    def close(self) -> None:
        if self.actuator:
            self.actuator.close()
        if self.gpu_devices is not None:
            self.gpu_devices.close()
        if self.probes:
            try:
                self.probes.poll(0)
            except Exception:  # pragma: no cover - best effort drain
                pass
            self.probes.close()
            self.probes = None
        if self.gpu:
            try:
                self.gpu[0].nvml.shutdown()
            except Exception:  # pragma: no cover
                pass

    # ---- agents -------------------------------------------------------------

    def add_agent(self, name: str, cgroup, *, apply_budgets: bool = True) -> int:
        agent_id = self._next_id
        self._next_id += 1
        b = self.policy.budgets
        if apply_budgets:
            cgroup.set_budgets(cpu_cores=b.cpu, memory_bytes=b.memory_bytes,
                               memory_high_bytes=b.memory_high_bytes, pids=b.pids)
        if self.gpu_devices is not None:
            self.gpu_devices.confine(name, cgroup)     # before the agent runs / is tracked
        self.probes.track_cgroup(cgroup.v2_path, agent_id)
        self.engine.add_agent(agent_id, name)
        self.cgroups[name] = cgroup
        self.names[agent_id] = name
        with self.state.lock:
            self.state.agents[name] = AgentState(name=name, cgroup=cgroup.v2_path, agent_id=agent_id,
                                                 cpu_limit_cores=b.cpu, memory_limit_bytes=b.memory_bytes)
        self._record({"ts": time.time(), "agent": name, "kind": "agent-start", "pid": None,
                      "cgroup": cgroup.v2_path})
        return agent_id

    def remove_agent(self, name: str) -> None:
        cg = self.cgroups.pop(name, None)
        if cg is None:
            return
        try:
            self.probes.untrack_cgroup(cg.v2_path)
        except Exception as e:  # the cgroup may be gone already
            log.debug("untrack %s: %s", name, e)
        self.engine.remove_agent(name)
        if self.gpu_devices is not None:
            self.gpu_devices.release(name)
        for k, v in list(self.names.items()):
            if v == name:
                del self.names[k]
        with self.state.lock:
            self.state.agents.pop(name, None)
        self._record({"ts": time.time(), "agent": name, "kind": "agent-stop", "pid": None})

    # ---- events and decisions ---------------------------------------------

    def on_event(self, ev: Event) -> None:
        name = self.names.get(ev.h.agent_id, "host")
        rec = event_record(ev, name, self._offset + ev.h.ts_ns / 1e9, self.rules)
        self.audit.write(rec)
        with self.state.lock:
            self.state.events_total[(name, ev.kind)] += 1
            agent = self.state.agents.get(name)
            if agent is not None and ev.kind in ("connect", "send"):
                agent.connections.append({k: rec.get(k) for k in ("ts", "protocol", "daddr", "dport", "verdict", "pid", "comm")})
        if self.trace_all and name == "host":
            self.report(rec)
            return
        if ev.h.verdict != Verdict.ALLOW or ev.kind == "stratum":
            self.report(rec)
        self.apply(self.engine.on_event(ev, time.monotonic()) if self.engine else [])

    def apply(self, decisions: list[Decision]) -> None:
        for d in decisions:
            result = None
            if d.action not in (Action.ALERT, Action.DENY):
                result = self.actuator.apply(d) if self.actuator else "failed: no actuator"
            now = time.time()
            for rec in decision_records(d, now, result):
                self._record(rec)
            with self.state.lock:
                self.state.violations_total[(d.agent, d.rule)] += 1
                if result is not None and result == "done":
                    self.state.actions_total[(d.agent, d.action.value)] += 1
                a = self.state.agents.get(d.agent)
                if a is not None:
                    a.violations.append({"ts": now, "rule": d.rule, "action": d.action.value,
                                         "reason": d.reason, "pid": d.pid, "monitor": d.monitor,
                                         "result": result})
                    if result == "done":
                        if d.action == Action.FREEZE:
                            a.frozen = True
                        elif d.action == Action.THAW:
                            a.frozen = False
                            a.throttled = False
                        elif d.action == Action.THROTTLE:
                            a.throttled = True

    def _record(self, rec: dict) -> None:
        self.audit.write(rec)
        if rec.get("kind") in ("violation", "action", "gpu-use"):
            self.report(rec)

    # ---- the loop -------------------------------------------------------------

    def step(self, timeout_ms: int = 100) -> None:
        self.probes.poll(timeout_ms)
        now = time.monotonic()
        if now - self._last_sample >= SAMPLE_INTERVAL_S:
            self._last_sample = now
            self._sample_cgroups(now)
            with self.state.lock:
                self.state.lost_kernel = self.probes.lost_kernel()
                self.state.lost_user = self.probes.user_lost
            if self.resolver and self.resolver.due(now) and self.resolver.refresh(now):
                self._rewrite_tables()
        if self.gpu and now - self._last_gpu >= self.policy.gpu.sample_interval_s:
            self._last_gpu = now
            self._gpu_step(now)
        self.apply(self.engine.tick(now))

    def _sample_cgroups(self, now: float) -> None:
        for name, cg in list(self.cgroups.items()):
            try:
                s = cg.sample()
            except OSError:
                continue
            with self.state.lock:
                a = self.state.agents.get(name)
                if a is not None:
                    a.pids, a.cpu_usage_seconds, a.memory_bytes = s.pids, s.cpu_usage_seconds, s.memory_bytes
                    if s.cpu_limit_cores is not None:
                        a.cpu_limit_cores = s.cpu_limit_cores
                    if s.memory_max_bytes is not None:
                        a.memory_limit_bytes = s.memory_max_bytes
            self.apply(self.engine.on_cgroup_sample(name, s, now))

    def _gpu_step(self, now: float) -> None:
        from ..gpu.loop import gpu_step
        sampler, rules = self.gpu
        decisions = gpu_step(sampler, rules, self.engine, self.cgroups, now, state=self.state,
                             on_use=self._record_gpu_use)
        self.apply(decisions)

    def _record_gpu_use(self, sample, attributed) -> None:
        from ..gpu.loop import GpuUseLog
        if not hasattr(self, "_gpu_use_log"):
            self._gpu_use_log = GpuUseLog()
        for rec in self._gpu_use_log.new_records(sample, attributed, time.time()):
            self._record(rec)

    def _rewrite_tables(self) -> None:
        from ..core.kernel_rules import compile_policy
        tables = compile_policy(self.policy, self.resolver.addresses)
        self.probes.set_tables(tables)
        self.rules = dict(tables.rules)
        self.engine.set_resolved(self.resolver.addresses)

    def reload(self, policy) -> None:
        """Swap the policy in place: maps are rewritten entry by entry, so
        enforcement never has a gap."""
        from ..core.kernel_rules import compile_policy
        resolved = self.resolver.addresses if self.resolver else None
        tables = compile_policy(policy, resolved)   # raises before anything changes
        self.probes.set_tables(tables)
        self.rules = dict(tables.rules)
        self.engine.replace_policy(policy)
        self.policy = policy
        with self.state.lock:
            self.state.policy_name = policy.name
            self.state.mode = policy.mode
        self._record({"ts": time.time(), "agent": "-", "kind": "policy-reload", "pid": None,
                      "policy": policy.name})
