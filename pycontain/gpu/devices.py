"""GPU allocation per agent: resolve the spec, confine the cgroup, set
CUDA_VISIBLE_DEVICES.

The spec of an agent is, in order: `pycontain run --gpus`, then the policy's
`gpu.devices` (`orchestrator`: what Slurm or the device plugin gave the
job, read from its processes' environment). Specs naming GPUs are resolved
against NVML before any probe is loaded; an unknown index or UUID is a usage
error naming it. Confinement uses the BPF device program (cgroup v2 attach
point, present on v2 and hybrid hosts); where it cannot load, the agent's v1
devices cgroup.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from ..core.errors import EnvironmentProblem, GpuUnavailable, UsageError
from ..core.gpu_devices import (
    ALL,
    ORCHESTRATOR,
    GpuGrant,
    GpuInfo,
    GpuSpec,
    GpuSpecError,
    denied_minors,
    parse_environ,
    parse_gpu_spec,
    resolve,
    spec_from_environ,
)

if TYPE_CHECKING:
    from ..kernel.devices import DeviceProgram

log = logging.getLogger("pycontain.gpu")


def node_gpus(nvml) -> list[GpuInfo]:
    if nvml is None or not nvml.available:
        return []
    return [GpuInfo(i, nvml.uuid(i), nvml.minor(i)) for i in nvml.device_indices]


def _needs_nvml(spec: GpuSpec) -> bool:
    return spec.kind in ("list", ORCHESTRATOR)


def check_spec(spec: GpuSpec, gpus: list[GpuInfo], nvml_status: str, allow_no_gpu: bool) -> GpuGrant | None:
    """Resolve now (bad input fails before anything loads). None: decided per agent later."""
    if spec.kind == ORCHESTRATOR:
        return None
    if _needs_nvml(spec) and not gpus:
        if allow_no_gpu:
            log.warning("%s names GPUs but NVML is %s: GPU allocation not enforced", spec.source, nvml_status)
            return GpuGrant(None, spec.source)
        raise GpuUnavailable(f"{spec.source} gives GPUs but NVML is {nvml_status}",
                             "install the NVIDIA driver, or pass --allow-no-gpu to run without GPU allocation")
    try:
        return resolve(spec, gpus)
    except GpuSpecError as e:
        raise UsageError(str(e)) from None


class GpuDevices:
    def __init__(self, policy_spec: GpuSpec | None, gpus: list[GpuInfo], *, nvml_status: str = "",
                 allow_no_gpu: bool = False, proc_root: str = "/proc"):
        self.policy_spec = policy_spec or ALL
        self.gpus = gpus
        self.nvml_status = nvml_status
        self.allow_no_gpu = allow_no_gpu
        self.proc_root = proc_root
        self.policy_grant = check_spec(self.policy_spec, gpus, nvml_status, allow_no_gpu)
        self.requested: dict[str, GpuGrant] = {}     # agent -> grant from `run --gpus`
        self.granted: dict[str, GpuGrant] = {}
        self.how: dict[str, str] = {}                # agent -> "bpf" | "v1 devices"
        self._cgroups: dict[str, Any] = {}         # agent -> its cgroup (AgentCgroup or TracedCgroup)
        self.program: DeviceProgram | None = None

    @classmethod
    def from_policy(cls, policy, allow_no_gpu: bool = False, nvml=None) -> GpuDevices:
        from .nvml import Nvml
        own = nvml is None
        nvml = nvml or Nvml()
        try:
            return cls(getattr(policy.gpu, "devices", None), node_gpus(nvml), nvml_status=nvml.status,
                       allow_no_gpu=allow_no_gpu)
        finally:
            if own:
                nvml.shutdown()

    def request(self, name: str, text: str | None) -> None:
        """`pycontain run --gpus TEXT` for agent `name`."""
        if text is None:
            return
        try:
            spec = parse_gpu_spec(text, "--gpus")
        except GpuSpecError as e:
            raise UsageError(str(e)) from None
        if spec.kind == ORCHESTRATOR:
            raise UsageError("--gpus orchestrator: only the daemon reads what an orchestrator allocated")
        grant = check_spec(spec, self.gpus, self.nvml_status, self.allow_no_gpu)
        assert grant is not None        # only an orchestrator spec is decided later, refused above
        self.requested[name] = grant

    # ---- per agent ---------------------------------------------------------

    def grant_for(self, name: str, cgroup) -> GpuGrant:
        if name in self.requested:
            return self.requested[name]
        if self.policy_grant is not None:
            return self.policy_grant
        return self._from_orchestrator(cgroup)

    def _from_orchestrator(self, cgroup) -> GpuGrant:
        """What the job's processes were told; nothing said: no GPU (fail
        closed). The environment is the job's word at adoption time, and the
        agent can write its own (`exec env SLURM_STEP_GPUS=...`): the
        oldest process, the one the orchestrator started, is asked first,
        and "every GPU" is never taken from it."""
        for pid in self._oldest_first(cgroup.pids()):
            try:
                with open(f"{self.proc_root}/{pid}/environ", "rb") as fh:
                    spec = spec_from_environ(parse_environ(fh.read()))
            except OSError:
                continue
            if spec is None:
                continue
            if spec.kind == ALL.kind:
                # no orchestrator grants a job "all" of a shared node through
                # these variables in a way pycontain can check: fail closed
                log.warning("agent %s: %s=all in the job's environment (pid %d): refused, no GPU; "
                            "name the GPUs (run --gpus, gpu.devices) to give every one",
                            name_of(cgroup), spec.source, pid)
                return GpuGrant((), f"orchestrator ({spec.source}=all refused)")
            try:
                grant = check_spec(spec, self.gpus, self.nvml_status, self.allow_no_gpu)
            except (UsageError, GpuUnavailable) as e:
                log.warning("agent %s: %s: %s", name_of(cgroup), spec.source, e.message)
                continue
            if grant is None:       # the job's environment cannot defer to the orchestrator: no GPU
                log.warning("agent %s: %s says 'orchestrator': ignored", name_of(cgroup), spec.source)
                continue
            return grant
        return GpuGrant((), "orchestrator (nothing allocated)")

    def _oldest_first(self, pids) -> list[int]:
        """pids by start time, oldest first; one whose start cannot be read
        comes last."""
        from ..actuate.actuators import proc_start_ns

        def start(pid: int) -> tuple[int, int]:
            try:
                return proc_start_ns(pid, self.proc_root), pid
            except (OSError, IndexError, ValueError):
                return 1 << 63, pid
        return sorted(pids, key=start)

    def launch_env(self, name: str) -> dict | None:
        """The agent's environment with CUDA_VISIBLE_DEVICES matching its grant."""
        grant = self.granted.get(name)
        visible = grant.cuda_visible_devices() if grant is not None else None
        if visible is None:                 # no grant, or one that does not confine
            return None
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = visible
        return env

    def confine(self, name: str, cgroup) -> GpuGrant:
        grant = self.grant_for(name, cgroup)
        self.granted[name] = grant
        if not grant.confines:
            return grant
        self.how[name] = self._confine(cgroup, grant)
        self._cgroups[name] = cgroup
        return grant

    def _confine(self, cgroup, grant: GpuGrant) -> str:
        from ..kernel.devices import DeviceProgram
        try:
            if self.program is None:
                self.program = DeviceProgram()
            self.program.confine(cgroup.v2_path, grant.allowed_minors())
            return "bpf"
        except EnvironmentProblem as e:
            from ..actuate.devices_v1 import confine_v1, v1_devices_dir
            d = v1_devices_dir(cgroup)
            if d is None:
                raise EnvironmentProblem(f"cannot confine agent {name_of(cgroup)} to {grant.describe()}: {e.message}; "
                                         "no v1 devices cgroup either") from None
            confine_v1(d, denied_minors(grant))
            return "v1 devices"

    def release(self, name: str) -> None:
        cg = self._cgroups.pop(name, None)
        self.granted.pop(name, None)
        if cg is not None and self.how.pop(name, None) == "bpf" and self.program is not None:
            self.program.release(cg.v2_path)

    def status(self) -> dict[str, str]:
        return {n: f"{g.describe()} ({self.how.get(n, 'not confined')})" for n, g in self.granted.items()}

    def close(self) -> None:
        if self.program is not None:
            self.program.close()


def name_of(cgroup) -> str:
    return getattr(cgroup, "name", "?")


def gpm_status(nvml=None) -> str:
    """Whether the gpu.signature rule can work here: "ok: GPM on GPU 0,1" or
    "unavailable: why"."""
    from .nvml import Nvml
    own = nvml is None
    nvml = nvml or Nvml()
    try:
        if not nvml.available:
            return f"unavailable: NVML is {nvml.status}"
        on = [i for i in nvml.device_indices if nvml.gpm_supported(i)]
        if not on:
            return "unavailable: no GPU here has GPM (Hopper or later); the gpu.signature rule never fires"
        return "ok: GPM on GPU " + ",".join(map(str, on))
    finally:
        if own:
            nvml.shutdown()
