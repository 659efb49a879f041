"""Which GPUs an agent may open (pure).

A GPU spec comes from `pycontain run --gpus`, from `gpu.devices` in a policy,
or (daemon mode) from what the orchestrator allocated to the job. It is
resolved against the node's GPUs as NVML lists them (index, UUID, minor
number of /dev/nvidiaN) into a grant: the minors the device program lets the
agent open and the CUDA_VISIBLE_DEVICES value that matches them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NVIDIA_MAJOR = 195            # /dev/nvidiaN, /dev/nvidiactl (255), /dev/nvidia-modeset (254)
FIRST_CONTROL_MINOR = 254     # minors from here on are control nodes, never GPUs
ORCHESTRATOR = "orchestrator"
_ITEM = re.compile(r"^(\d{1,3}|(GPU|MIG)-[0-9A-Za-z-]{1,80})$")


class GpuSpecError(ValueError):
    """Bad or unknown GPU: the message names the value."""


@dataclass(frozen=True)
class GpuSpec:
    kind: str                         # "all" | "none" | "list" | "orchestrator"
    items: tuple[str, ...] = ()       # indexes or UUIDs, for "list"
    source: str = "--gpus"            # named in error messages


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    minor: int | None                 # None: NVML could not say


@dataclass(frozen=True)
class GpuGrant:
    """devices None = every GPU (no confinement)."""

    devices: tuple[GpuInfo, ...] | None
    source: str = ""

    @property
    def confines(self) -> bool:
        return self.devices is not None

    def allowed_minors(self) -> frozenset[int]:
        return frozenset(d.minor for d in self.devices or () if d.minor is not None)

    def cuda_visible_devices(self) -> str | None:
        """UUIDs, not indexes: CUDA numbers GPUs fastest-first unless
        CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus; a UUID means the same
        GPU to both."""
        if self.devices is None:
            return None
        return ",".join(d.uuid or str(d.index) for d in self.devices)

    def describe(self) -> str:
        if self.devices is None:
            return "all GPUs"
        if not self.devices:
            return "no GPU"
        return "GPU " + ",".join(str(d.index) for d in self.devices)


ALL = GpuSpec("all")


def parse_gpu_spec(value: object, source: str = "--gpus") -> GpuSpec:
    """"all", "none", "orchestrator", "0,2", "GPU-uuid,..." or a list of them
    (text, or YAML scalars of any type: each is read as its str())."""
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        text = str(value).strip()
        if text.lower() in ("all", "none", ORCHESTRATOR):
            return GpuSpec(text.lower(), (), source)
        items = [x.strip() for x in text.split(",")]
    if not items or any(not x for x in items):
        raise GpuSpecError(f"{source} {value!r}: give GPU indexes or UUIDs separated by commas, or all / none")
    for x in items:
        if not _ITEM.match(x):
            raise GpuSpecError(f"{source}: {x!r} is not a GPU index or UUID")
    return GpuSpec("list", tuple(dict.fromkeys(items)), source)


def resolve(spec: GpuSpec, gpus: list[GpuInfo]) -> GpuGrant:
    """The grant for `spec` on a node with `gpus`; an unknown index or UUID
    raises GpuSpecError naming it."""
    if spec.kind == "all":
        return GpuGrant(None, spec.source)
    if spec.kind == "none":
        return GpuGrant((), spec.source)
    by_index = {str(g.index): g for g in gpus}
    by_uuid = {g.uuid.lower(): g for g in gpus if g.uuid}
    out: list[GpuInfo] = []
    for item in spec.items:
        g = by_index.get(item) or by_uuid.get(item.lower())
        if g is None:
            known = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none"
            raise GpuSpecError(f"{spec.source}: no GPU {item} on this node (GPUs: {known})")
        if g.minor is None:
            raise GpuSpecError(f"{spec.source}: GPU {item}: NVML gives no minor number for it, "
                               "so its /dev/nvidiaN cannot be told apart")
        if g not in out:
            out.append(g)
    return GpuGrant(tuple(out), spec.source)


def denied_minors(grant: GpuGrant, all_minors: range = range(FIRST_CONTROL_MINOR)) -> list[int]:
    """GPU minors the agent may not open (control nodes are never among them)."""
    allowed = grant.allowed_minors()
    return [m for m in all_minors if m not in allowed]


# ---- what an orchestrator allocated -----------------------------------------------

# Slurm: SLURM_JOB_GPUS / SLURM_STEP_GPUS hold the node's GPU indexes (global,
# unlike CUDA_VISIBLE_DEVICES, which Slurm renumbers from 0 when it constrains
# devices itself). Kubernetes' NVIDIA device plugin: NVIDIA_VISIBLE_DEVICES
# holds UUIDs (or indexes), "all", "none" or "void".
_ENV_ORDER = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def spec_from_environ(env: dict[str, str]) -> GpuSpec | None:
    """The GPUs an orchestrator gave a job, from one of its processes'
    environment; None when it says nothing."""
    for key in _ENV_ORDER:
        if key not in env:
            continue
        val = env[key].strip()
        if key == "CUDA_VISIBLE_DEVICES" and val \
                and not all(v.strip().startswith(("GPU-", "MIG-")) for v in val.split(",")):
            continue      # bare indexes here may be renumbered: not trusted
        if val.lower() in ("", "none", "void", "nodevfiles"):
            return GpuSpec("none", (), key)
        if val.lower() == "all":
            return GpuSpec("all", (), key)
        try:
            return parse_gpu_spec(val, key)
        except GpuSpecError:
            continue
    return None


def parse_environ(raw: bytes) -> dict[str, str]:
    """/proc/<pid>/environ (NUL-separated KEY=VALUE)."""
    out: dict[str, str] = {}
    for part in raw.split(b"\0"):
        k, eq, v = part.partition(b"=")
        if eq and k:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out
