"""One GPU step of the controller: sample → attribute → rules → engine.

Publishing per-agent GPU use into the live state is the caller's business
(app/controller.py): this layer does not know the observe layer."""

from __future__ import annotations

from ..core.gpu_rules import device_busy
from ..core.text import safe_text
from .attribution import attribute


def gpu_step(sampler, rules, engine, cgroups: dict, now: float, layout=None, on_use=None,
             on_unattributed=None) -> list:
    """`on_use(sample, attributed)`: every agent GPU process of this sample
    (the controller records first sightings and publishes per-agent use).
    `on_unattributed(samples)`: GPU processes gone from /proc that no record
    names (counted by the caller). Without rules (or engine) the step only
    samples and attributes."""
    sample = sampler.sample(now)
    table = getattr(engine, "processes", None)
    lost: list = []
    attributed = attribute(sample, cgroups, lookup=getattr(table, "lookup", None), layout=layout,
                           exited=_exited_since(table, now, getattr(sampler, "interval_s", 1.0)), unattributed=lost)
    if on_unattributed is not None and lost:
        on_unattributed(lost)
    if on_use is not None:
        on_use(sample, attributed)
    if rules is None or engine is None:
        return []
    breaches = rules.evaluate(sample, attributed, now, getattr(engine, "unapproved_at", None))
    return engine.on_breaches(breaches, now) if breaches else []


def _exited_since(table, now: float, interval_s: float):
    """pid -> the record of a process that exited within the span NVML's
    samples can cover: since the previous reading (one interval; two, for a
    late step) plus a margin for the kernel's exit record. Older records
    could name a process whose pid has been reused since."""
    if table is None or not hasattr(table, "exited"):
        return None
    since = now - 2 * interval_s - EXIT_MARGIN_S
    return lambda pid: table.exited(pid, since)


EXIT_MARGIN_S = 2.0


def use_by_agent(sample, attributed) -> dict[str, list[tuple[int, str, int, float | None]]]:
    """agent -> [(device, uuid, memory bytes, SM util % or None)], by device."""
    uuids = {d.index: d.uuid for d in sample.devices}
    per: dict[str, dict[int, list]] = {}
    for a in attributed:
        slot = per.setdefault(a.agent, {}).setdefault(a.device, [0, None])
        slot[0] += a.used_memory_bytes or 0
        if a.sm_util is not None:
            slot[1] = device_busy(slot[1] or 0.0, a.sm_util)
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
