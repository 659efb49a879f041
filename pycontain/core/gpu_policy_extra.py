"""The `gpu.devices` and `gpu.signature` policy keys (parsed here so that
policy.py takes them in one call)."""

from __future__ import annotations

from dataclasses import dataclass

from .gpu_devices import GpuSpecError, parse_gpu_spec

EXTRA_KEYS = ("devices", "signature")


@dataclass(frozen=True)
class SignaturePolicy:
    """A miner's shape on a GPU, read from GPM: integer pipes busy, tensor
    cores idle, for `window_s`."""

    int_min: float = 50.0              # percent of integer-pipe activity, at or above
    tensor_max: float = 5.0            # percent of tensor activity, at or below
    window_s: float = 60.0
    allowed_programs: tuple[str, ...] = ()   # legitimately integer-heavy programs


def parse_gpu_extras(m: dict, globs) -> dict:
    """GpuPolicy keyword arguments for the keys of EXTRA_KEYS present in `m`."""
    kw: dict = {}
    if "devices" in m:
        n = m["devices"]
        raw = [x.scalar() for x in n.seq()] if n._kind() == "a list" else n.scalar()
        try:
            kw["devices"] = parse_gpu_spec(raw, "gpu.devices")
        except GpuSpecError as e:
            raise n.error(str(e).removeprefix("gpu.devices: ").removeprefix("gpu.devices "),
                          "GPU indexes or UUIDs, or all / none / orchestrator") from None
    if "signature" in m:
        s = m["signature"].mapping(("int_min", "tensor_max", "window", "allowed_programs"))
        skw: dict = {}
        if "int_min" in s:
            skw["int_min"] = float(s["int_min"].number(1, 100))
        if "tensor_max" in s:
            skw["tensor_max"] = float(s["tensor_max"].number(0, 100))
        if "window" in s:
            skw["window_s"] = s["window"].duration()
        if "allowed_programs" in s:
            skw["allowed_programs"] = globs(s["allowed_programs"])
        kw["signature"] = SignaturePolicy(**skw)
    return kw


def gpu_extras_dict(g) -> dict:
    out: dict = {}
    d = getattr(g, "devices", None)
    if d is not None:
        out["devices"] = list(d.items) if d.kind == "list" else d.kind
    s = getattr(g, "signature", None)
    if s is not None:
        out["signature"] = {"int_min": s.int_min, "tensor_max": s.tensor_max, "window": s.window_s,
                            "allowed_programs": list(s.allowed_programs)}
    return out
