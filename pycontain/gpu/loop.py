"""One GPU step of the controller: sample → attribute → rules → engine."""

from __future__ import annotations

from collections import defaultdict

from ..state import GpuUse
from .attribution import attribute


def gpu_step(sampler, rules, engine, cgroups: dict, now: float, state=None, layout=None) -> list:
    sample = sampler.sample(now)
    lookup = getattr(getattr(engine, "processes", None), "lookup", None)
    attributed = attribute(sample, cgroups, lookup=lookup, layout=layout)
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
