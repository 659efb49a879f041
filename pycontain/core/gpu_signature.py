"""The miner's signature on a GPU, without names (pure).

Hashing (SHA-256d, Ethash, KawPow...) keeps the integer pipes busy and never
touches the tensor cores; training and inference are tensor- and
floating-point-heavy. GPM (Hopper and later) reports both per GPU. A GPU
whose integer activity stays at or above `int_min` while tensor activity
stays at or below `tensor_max` for the whole `window` is running a miner's
kind of work: each agent process on it whose program is not on
`gpu.signature.allowed_programs` is a `gpu_signature` breach.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .decisions import Breach, GpuDetail
from .samples import GpuSample
from .text import safe_text

if TYPE_CHECKING:   # annotations only: gpu_rules imports this module
    from .gpu_policy_extra import SignaturePolicy
    from .gpu_rules import AttributedGpuProcess

# (program filename, allowed globs) -> allowed: gpu_rules.program_allowed
ProgramAllowed = Callable[[bytes, tuple[str, ...]], bool]


class SignatureRule:
    def __init__(self, sig: SignaturePolicy, program_allowed: ProgramAllowed):
        self.sig = sig
        self.program_allowed = program_allowed   # gpu_rules.program_allowed (passed in: no import cycle)
        # device -> (ts, int %, tensor %)
        self._hist: dict[int, deque[tuple[float, float, float]]] = defaultdict(deque)

    def _sustained(self, dev: int, now: float, reading: tuple[float, float] | None) -> bool:
        q = self._hist[dev]
        if reading is None:
            q.clear()                       # no GPM reading: no evidence, start over
            return False
        q.append((now, *reading))
        # keep the last reading at or before the window's start: with it the
        # history covers the whole window whatever the sampling interval
        while len(q) > 1 and q[1][0] <= now - self.sig.window_s:
            q.popleft()
        if now - q[0][0] < self.sig.window_s * 0.9:
            return False                    # not enough history for "sustained"
        return all(i >= self.sig.int_min and t <= self.sig.tensor_max for _, i, t in q)

    def evaluate(self, sample: GpuSample, attributed: Sequence[AttributedGpuProcess], now: float) -> list[Breach]:
        hot: set[int] = set()
        for d in sample.devices:
            reading = ((d.int_util, d.tensor_util)
                       if d.int_util is not None and d.tensor_util is not None else None)
            if self._sustained(d.index, now, reading):
                hot.add(d.index)
        out: list[Breach] = []
        for x in attributed:
            allowed = bool(self.sig.allowed_programs) and self.program_allowed(x.filename, self.sig.allowed_programs)
            if x.device in hot and not allowed:
                dev = next(d for d in sample.devices if d.index == x.device)
                out.append(Breach(x.agent, "gpu.signature", "gpu_signature",
                                  f"{safe_text(x.filename or b'?', 256)} (pid {x.pid}) on GPU {x.device}: integer "
                                  f"pipes {dev.int_util:.0f}%, tensor {dev.tensor_util:.0f}% "
                                  f"for {self.sig.window_s:g}s (a miner's signature)",
                                  pid=x.pid, start_ns=x.start_ns, gpu=GpuDetail(device=x.device)))
        return out
