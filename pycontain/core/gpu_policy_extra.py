"""The `gpu.devices` and `gpu.signature` policy keys: their readers, for
policy.py's GPU_KEYS table, and their effective form for `policy show`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from .gpu_devices import GpuSpec, GpuSpecError, parse_gpu_spec
from .policy_yaml import Node

if TYPE_CHECKING:   # annotation only: policy imports this module
    from .policy import GpuPolicy


@dataclass(frozen=True)
class SignaturePolicy:
    """A miner's shape on a GPU, read from GPM: integer pipes busy, tensor
    cores idle, in at least `match` of the readings over `window_s`."""

    int_min: float = 50.0              # percent of integer-pipe activity, at or above
    tensor_max: float = 5.0            # percent of tensor activity, at or below
    window_s: float = 60.0
    allowed_programs: tuple[str, ...] = ()   # legitimately integer-heavy programs
    # share of the window's readings with that shape (0.5-1): a miner's short
    # pause or a sprinkle of tensor work must not reset the window
    match: float = 0.8
    # a reading whose integer activity is at least this many times its
    # tensor activity is miner-shaped too: a small decoy matmul in every
    # reading (6 % tensor beside 90 % integer) must not buy a miner a pass
    int_tensor_ratio: float = 4.0


def read_devices(n: Node) -> GpuSpec:
    """`gpu.devices`: a list of indexes or UUIDs, or all / none / orchestrator."""
    raw = [x.scalar() for x in n.seq()] if isinstance(n.node, yaml.SequenceNode) else n.scalar()
    try:
        return parse_gpu_spec(raw, "gpu.devices")
    except GpuSpecError as e:
        raise n.error(str(e).removeprefix("gpu.devices: ").removeprefix("gpu.devices "),
                      "GPU indexes or UUIDs, or all / none / orchestrator") from None


def read_signature(n: Node, globs: Callable[[Node], tuple[str, ...]]) -> SignaturePolicy:
    """`gpu.signature`: thresholds of the miner shape and its allow-list."""
    s = n.mapping(("int_min", "tensor_max", "window", "match", "int_tensor_ratio", "allowed_programs"))
    kw: dict[str, Any] = {}
    if "int_min" in s:
        kw["int_min"] = float(s["int_min"].number(1, 100))
    if "tensor_max" in s:
        kw["tensor_max"] = float(s["tensor_max"].number(0, 100))
    if "window" in s:
        kw["window_s"] = s["window"].duration()
    if "match" in s:
        # percent, like int_min; under half would flag GPUs mostly doing other work
        kw["match"] = float(s["match"].number(50, 100)) / 100.0
    if "int_tensor_ratio" in s:
        # under 2, tensor-heavy work with busy integer pipes (training) would match
        kw["int_tensor_ratio"] = float(s["int_tensor_ratio"].number(2, 100))
    if "allowed_programs" in s:
        kw["allowed_programs"] = globs(s["allowed_programs"])
    return SignaturePolicy(**kw)


def gpu_extras_dict(g: GpuPolicy) -> dict[str, Any]:
    """`gpu.devices` and `gpu.signature` as data for policy_to_dict (JSON-like)."""
    out: dict[str, Any] = {}
    d: GpuSpec | None = getattr(g, "devices", None)
    if d is not None:
        out["devices"] = list(d.items) if d.kind == "list" else d.kind
    s: SignaturePolicy | None = getattr(g, "signature", None)
    if s is not None:
        out["signature"] = {"int_min": s.int_min, "tensor_max": s.tensor_max, "window": s.window_s,
                            "match": s.match * 100.0, "int_tensor_ratio": s.int_tensor_ratio,
                            "allowed_programs": list(s.allowed_programs)}
    return out
