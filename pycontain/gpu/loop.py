"""One GPU step of the controller: sample → attribute → rules → engine."""

from __future__ import annotations

from collections import defaultdict

from ..observe.state import GpuUse
from .attribution import attribute


def gpu_step(sampler, rules, engine, cgroups: dict, now: float, state=None, layout=None, on_use=None) -> list:
    """`on_use(attributed)`: every agent GPU process of this sample (the
    controller records first sightings in the audit log)."""
    sample = sampler.sample(now)
    lookup = getattr(getattr(engine, "processes", None), "lookup", None)
    attributed = attribute(sample, cgroups, lookup=lookup, layout=layout)
    if on_use is not None:
        on_use(sample, attributed)
    if state is not None:
        uuids = {d.index: d.uuid for d in sample.devices}
        per: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(lambda: [0, None]))
        for a in attributed:
            slot = per[a.agent][a.device]
            slot[0] += a.used_memory_bytes or 0
            if a.sm_util is not None:
                slot[1] = (slot[1] or 0.0) + a.sm_util
        with state.lock:
            state.gpu_status = sample.status
            for name, agent in state.agents.items():
                agent.gpu = [GpuUse(device=d, uuid=uuids.get(d, ""), memory_bytes=m, sm_util=u)
                             for d, (m, u) in sorted(per.get(name, {}).items())]
    breaches = rules.evaluate(sample, attributed, now)
    return engine.on_breaches(breaches, now) if breaches else []


class GpuUseLog:
    """First sightings of agent processes on GPUs, as audit/trace records:
    which agent uses which GPU, how much, through which program."""

    def __init__(self):
        self._seen: set = set()

    def new_records(self, sample, attributed, ts: float) -> list[dict]:
        from ..core.text import safe_text
        uuids = {d.index: d.uuid for d in sample.devices}
        current, out = set(), []
        for a in attributed:
            key = (a.agent, a.pid, a.start_ns, a.device)
            current.add(key)
            if key not in self._seen:
                out.append({"ts": ts, "agent": a.agent, "kind": "gpu-use", "pid": a.pid, "device": a.device,
                            "uuid": uuids.get(a.device, ""), "memory_bytes": a.used_memory_bytes,
                            "sm_util": a.sm_util, "filename": safe_text(a.filename, 1024),
                            "argv": [safe_text(x, 512) for x in a.argv[:64]]})
        self._seen = current
        return out
