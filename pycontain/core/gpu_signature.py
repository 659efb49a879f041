"""The miner's signature on a GPU, without names (pure).

Hashing (SHA-256d, Ethash, KawPow...) keeps the integer pipes busy and never
touches the tensor cores; training and inference are tensor- and
floating-point-heavy. GPM (Hopper and later) reports both per GPU. A GPU
on which at least `match` of the readings over `window` show integer
activity at or above `int_min` and tensor activity at or below `tensor_max`
(or at most 1/`int_tensor_ratio` of the integer activity) is running a
miner's kind of work: each agent process on it whose program is not on
`gpu.signature.allowed_programs` is a `gpu_signature` breach.

A share, not every reading: a miner that pauses for a second each minute, or
runs a tiny matmul now and then, would otherwise reset the window forever;
and a matmul in every reading passes only when its tensor work reaches a
quarter of the integer work (the default ratio): hash rate given up.
Training keeps its tensor cores busy most of the time, so it stays far from
the share.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .decisions import Breach, GpuDetail
from .samples import GpuDeviceSample, GpuSample
from .text import safe_text

if TYPE_CHECKING:   # annotations only: gpu_rules imports this module
    from .gpu_policy_extra import SignaturePolicy
    from .gpu_rules import AttributedGpuProcess

# (resolved program, allowed globs, admin-owned links to it) -> allowed: gpu_rules.program_allowed
ProgramAllowed = Callable[[bytes, tuple[str, ...], tuple[bytes, ...]], bool]

# Fewer readings than this never flag: in a window of four, one reading is a
# quarter of the evidence, and a share of it says little
MIN_READINGS = 5


class SignatureRule:
    def __init__(self, sig: SignaturePolicy, program_allowed: ProgramAllowed):
        self.sig = sig
        self.program_allowed = program_allowed   # gpu_rules.program_allowed (passed in: no import cycle)
        # device -> (ts, int %, tensor %)
        self._hist: dict[int, deque[tuple[float, float, float]]] = defaultdict(deque)

    def _share(self, dev: int, now: float, reading: tuple[float, float] | None) -> float | None:
        """The share of the window's readings on `dev` with the miner's
        shape; None while the history is too short to judge."""
        q = self._hist[dev]
        if reading is not None:
            q.append((now, *reading))
        # a missing GPM reading is no evidence either way: skipped, not a
        # reset (a miner that made one reading fail would start over)
        # keep the last reading at or before the window's start: with it the
        # history covers the whole window whatever the sampling interval
        while len(q) > 1 and q[1][0] <= now - self.sig.window_s:
            q.popleft()
        if not q or now - q[0][0] < self.sig.window_s * 0.9 or len(q) < MIN_READINGS:
            return None                     # not enough history for "sustained"
        return self._matching(q) / len(q)

    def _matching(self, q: deque[tuple[float, float, float]]) -> int:
        """Readings with the miner's shape: integer pipes busy, and tensor
        cores idle or far less busy than the integer pipes. The ratio makes
        a decoy matmul cost a real share of the hash rate (to pass, the
        tensor work must reach 1/ratio of the integer work in over a fifth
        of the readings); training is tensor-heavy, far from it."""
        sig = self.sig
        return sum(1 for _, i, t in q
                   if i >= sig.int_min and (t <= sig.tensor_max or t * sig.int_tensor_ratio <= i))

    def _hot(self, sample: GpuSample, now: float) -> dict[int, float]:
        """device -> share of miner-shaped readings, for devices at or over `match`."""
        hot: dict[int, float] = {}
        for d in sample.devices:
            reading = ((d.int_util, d.tensor_util)
                       if d.int_util is not None and d.tensor_util is not None else None)
            share = self._share(d.index, now, reading)
            if share is not None and share >= self.sig.match:
                hot[d.index] = share
        return hot

    def evaluate(self, sample: GpuSample, attributed: Sequence[AttributedGpuProcess], now: float) -> list[Breach]:
        hot = self._hot(sample, now)
        out: list[Breach] = []
        for x in attributed:
            allowed = bool(self.sig.allowed_programs) and \
                self.program_allowed(x.filename, self.sig.allowed_programs, x.aliases)
            if x.device in hot and not allowed:
                dev = next(d for d in sample.devices if d.index == x.device)
                out.append(Breach(x.agent, "gpu.signature", "gpu_signature",
                                  f"{safe_text(x.filename or b'?', 256)} (pid {x.pid}) on GPU {x.device}: "
                                  f"{_now(dev)}; {hot[x.device]:.0%} of the readings over {self.sig.window_s:g}s "
                                  f"have a miner's signature",
                                  pid=x.pid, start_ns=x.start_ns, gpu=GpuDetail(device=x.device)))
        return out


def _now(dev: GpuDeviceSample) -> str:
    """The device's reading now, for the record; a missing one says so
    (the history judged, this reading was skipped)."""
    if dev.int_util is None or dev.tensor_util is None:
        return "no GPM reading now"
    return f"integer pipes {dev.int_util:.0f}%, tensor {dev.tensor_util:.0f}% now"
