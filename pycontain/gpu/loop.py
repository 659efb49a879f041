"""One GPU step of the controller: sample → attribute → rules → engine.

Publishing per-agent GPU use into the live state is the caller's business
(app/controller.py): this layer does not know the observe layer."""

from __future__ import annotations

from ..core.text import safe_text
from .attribution import attribute


def gpu_step(sampler, rules, engine, cgroups: dict, now: float, layout=None, on_use=None) -> list:
    """`on_use(sample, attributed)`: every agent GPU process of this sample
    (the controller records first sightings and publishes per-agent use).
    Without rules (or engine) the step only samples and attributes."""
    sample = sampler.sample(now)
    lookup = getattr(getattr(engine, "processes", None), "lookup", None)
    attributed = attribute(sample, cgroups, lookup=lookup, layout=layout)
    if on_use is not None:
        on_use(sample, attributed)
    if rules is None or engine is None:
        return []
    breaches = rules.evaluate(sample, attributed, now, getattr(engine, "unapproved_at", None))
    return engine.on_breaches(breaches, now) if breaches else []


def use_by_agent(sample, attributed) -> dict[str, list[tuple[int, str, int, float | None]]]:
    """agent -> [(device, uuid, memory bytes, SM util % or None)], by device."""
    uuids = {d.index: d.uuid for d in sample.devices}
    per: dict[str, dict[int, list]] = {}
    for a in attributed:
        slot = per.setdefault(a.agent, {}).setdefault(a.device, [0, None])
        slot[0] += a.used_memory_bytes or 0
        if a.sm_util is not None:
            slot[1] = (slot[1] or 0.0) + a.sm_util
    return {agent: [(d, uuids.get(d, ""), m, u) for d, (m, u) in sorted(devs.items())]
            for agent, devs in per.items()}


class GpuUseLog:
    """First sightings of agent processes on GPUs, as audit/trace records:
    which agent uses which GPU, how much, through which program."""

    def __init__(self) -> None:
        self._seen: set = set()

    def new_records(self, sample, attributed, ts: float) -> list[dict]:
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
