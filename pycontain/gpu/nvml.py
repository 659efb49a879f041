"""The one NVML wrapper (as nvitop does it).

Every pynvml call goes through :meth:`Nvml._call`: "not supported", "no
permission" and "function not found" become ``None`` (unavailable, not an
error); a lost GPU marks the device gone; a missing library or driver makes
the whole wrapper unavailable with a reason. Nothing here raises to callers.
"""

from __future__ import annotations

import logging

from ..core.samples import GpuDeviceSample, GpuProcessSample

log = logging.getLogger("pycontain.gpu")

try:  # nvidia-ml-py; absent or broken -> GPU rules report "unavailable"
    import pynvml
except Exception as e:  # pragma: no cover - depends on the install
    pynvml = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = ""


class DeviceGone(Exception):
    pass


class Nvml:
    def __init__(self) -> None:
        self.available = False
        self.status = "unavailable: not initialised"
        self.driver = ""
        self._handles: dict[int, object] = {}
        self._last_seen: dict[int, int] = {}   # device -> last process-utilisation timestamp (us)
        self.gone: set[int] = set()
        self.mig: set[int] = set()
        self.mps_blind: set[int] = set()     # GPUs with an MPS server whose clients NVML cannot list
        self._gpm_prev: dict[int, object] = {}   # device -> previous GPM sample
        if pynvml is None:
            self.status = f"unavailable: nvidia-ml-py not importable ({_IMPORT_ERROR})"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            self.status = f"unavailable: {e}"
            return
        except OSError as e:  # pragma: no cover
            self.status = f"unavailable: {e}"
            return
        self.available = True
        self.driver = _str(self._call(pynvml.nvmlSystemGetDriverVersion) or "")
        self.refresh_devices()

    # ---- the one place errors are interpreted -----------------------------

    def _call(self, fn, *args, device: int | None = None):
        try:
            return fn(*args)
        except pynvml.NVMLError as e:
            code = getattr(e, "value", None)
            if code in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION,
                        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_NOT_FOUND):
                return None
            if code in (pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_UNKNOWN) and device is not None:
                self.gone.add(device)
                raise DeviceGone(str(e)) from None
            log.debug("NVML %s: %s", getattr(fn, "__name__", fn), e)
            return None

    def refresh_devices(self) -> None:
        if not self.available:
            return
        n = self._call(pynvml.nvmlDeviceGetCount) or 0
        self._handles = {}
        for i in range(n):
            try:
                h = self._call(pynvml.nvmlDeviceGetHandleByIndex, i, device=i)
            except DeviceGone:
                continue
            if h is not None:
                self._handles[i] = h
                self.gone.discard(i)
        self._update_status()

    def _update_status(self) -> None:
        notes = []
        if self.gone:
            notes.append("GPU " + ",".join(map(str, sorted(self.gone))) + " lost")
        if self.mig:
            notes.append("MIG on GPU " + ",".join(map(str, sorted(self.mig)))
                         + ": per-process SM utilisation unavailable")
        if self.mps_blind:
            notes.append("MPS on GPU " + ",".join(map(str, sorted(self.mps_blind)))
                         + ": NVML lists no MPS client pids (driver too old); their GPU use shows as the MPS server's")
        self.status = (("degraded: " + "; ".join(notes)) if notes
                       else f"ok ({len(self._handles)} GPU(s), driver {self.driver})")

    @property
    def device_indices(self) -> list[int]:
        return sorted(i for i in self._handles if i not in self.gone)

    # ---- readings ----------------------------------------------------------

    def device(self, i: int) -> GpuDeviceSample:
        h = self._handles[i]
        name = _str(self._call(pynvml.nvmlDeviceGetName, h, device=i) or "")
        uuid = _str(self._call(pynvml.nvmlDeviceGetUUID, h, device=i) or "")
        util = self._call(pynvml.nvmlDeviceGetUtilizationRates, h, device=i)
        mem = self._call(pynvml.nvmlDeviceGetMemoryInfo, h, device=i)
        power = self._call(pynvml.nvmlDeviceGetPowerUsage, h, device=i)
        mig = self._call(pynvml.nvmlDeviceGetMigMode, h, device=i)
        is_mig = bool(mig and mig[0])
        (self.mig.add if is_mig else self.mig.discard)(i)
        gpm = self.gpm(i)
        return GpuDeviceSample(index=i, uuid=uuid, name=name,
                               int_util=gpm[0] if gpm else None, tensor_util=gpm[1] if gpm else None,
                               util_gpu=float(util.gpu) if util is not None else None,
                               memory_used_bytes=int(mem.used) if mem is not None else None,
                               memory_total_bytes=int(mem.total) if mem is not None else None,
                               power_watts=power / 1000.0 if power is not None else None, mig=is_mig)

    def memory_by_pid(self, i: int) -> dict[int, int | None]:
        """GPU memory per pid on GPU i (compute, graphics and MPS clients)."""
        h = self._handles[i]
        mem_by_pid: dict[int, int | None] = {}
        for fn in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
            for p in self._call(fn, h, device=i) or []:
                used = p.usedGpuMemory
                prev = mem_by_pid.get(p.pid)
                mem_by_pid[p.pid] = (prev or 0) + used if used is not None else prev
        self._mps_clients(i, h, mem_by_pid)
        return mem_by_pid

    def processes(self, i: int) -> list[GpuProcessSample]:
        """Every pid that held memory or had SM samples on GPU i since the
        last reading. A pid with samples but no memory now has exited (or
        freed its memory) in between: kept, with 0 bytes, so work split into
        processes shorter than the interval still counts."""
        mem_by_pid = self.memory_by_pid(i)
        util = None if i in self.mig else self._util_by_pid(i)
        out = []
        for pid, used in mem_by_pid.items():
            # MIG: per-process utilisation does not exist -> None (unavailable);
            # no sample since the last one -> 0 (idle), not unavailable
            sm = None if util is None else util.get(pid, 0.0)
            out.append(GpuProcessSample(pid=pid, device=i, used_memory_bytes=used, sm_util=sm))
        for pid, sm in (util or {}).items():
            if pid not in mem_by_pid:
                out.append(GpuProcessSample(pid=pid, device=i, used_memory_bytes=0, sm_util=sm))
        return out

    def _util_by_pid(self, i: int) -> dict[int, float]:
        """Peak SM % per pid over the samples NVML took since the last call."""
        util: dict[int, float] = {}
        samples = self._call(pynvml.nvmlDeviceGetProcessUtilization, self._handles[i],
                             self._last_seen.get(i, 0), device=i)
        for s in samples or []:
            util[s.pid] = max(util.get(s.pid, 0.0), float(s.smUtil))
            self._last_seen[i] = max(self._last_seen.get(i, 0), int(s.timeStamp))
        return util

    def _mps_clients(self, i: int, h, mem_by_pid: dict) -> None:
        """MPS clients reach the GPU through the MPS server: the compute list
        shows the server, this call the clients (their own pids, so they are
        attributed to their own agent). Where the call is missing while a
        server runs, the clients cannot be seen: say so."""
        fn = getattr(pynvml, "nvmlDeviceGetMPSComputeRunningProcesses", None)
        clients = self._call(fn, h, device=i) if fn is not None else None
        for p in clients or []:
            mem_by_pid[p.pid] = (mem_by_pid.get(p.pid) or 0) + (p.usedGpuMemory or 0)
        server = any(_comm(pid) == MPS_SERVER_COMM for pid in mem_by_pid)
        (self.mps_blind.add if server and clients is None else self.mps_blind.discard)(i)

    def gpm_supported(self, i: int) -> bool:
        fn = getattr(pynvml, "nvmlGpmQueryDeviceSupport", None)
        try:
            s = self._call(fn, self._handles[i], device=i) if fn is not None else None
        except DeviceGone:
            return False
        return bool(s is not None and s.isSupportedDevice)

    def gpm(self, i: int) -> tuple[float, float] | None:
        """(integer-pipe %, tensor %) over the time since the previous call,
        from two GPM samples; None until two exist or without GPM."""
        if not hasattr(pynvml, "nvmlGpmSampleAlloc"):
            return None
        cur = self._call(pynvml.nvmlGpmSampleAlloc)
        if cur is None:
            return None
        if self._call(pynvml.nvmlGpmSampleGet, self._handles[i], cur, device=i) is None:
            self._call(pynvml.nvmlGpmSampleFree, cur)
            return None
        prev, self._gpm_prev[i] = self._gpm_prev.get(i), cur
        if prev is None:
            return None
        try:
            m = pynvml.c_nvmlGpmMetricsGet_t()
            m.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            m.numMetrics = 2
            m.sample1, m.sample2 = prev, cur
            m.metrics[0].metricId = pynvml.NVML_GPM_METRIC_INTEGER_UTIL
            m.metrics[1].metricId = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
            got = self._call(pynvml.nvmlGpmMetricsGet, m, device=i)
        finally:
            self._call(pynvml.nvmlGpmSampleFree, prev)
        if got is None or any(got.metrics[k].nvmlReturn != 0 for k in (0, 1)):
            return None
        return float(got.metrics[0].value), float(got.metrics[1].value)

    def minor(self, i: int) -> int | None:
        """The N of /dev/nvidiaN for GPU i (what the device program checks)."""
        try:
            v = self._call(pynvml.nvmlDeviceGetMinorNumber, self._handles[i], device=i)
        except DeviceGone:
            return None
        return int(v) if v is not None else None

    def uuid(self, i: int) -> str:
        try:
            return _str(self._call(pynvml.nvmlDeviceGetUUID, self._handles[i], device=i) or "")
        except DeviceGone:
            return ""

    def shutdown(self) -> None:
        if self.available:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
            self.available = False


MPS_SERVER_COMM = "nvidia-cuda-mps"   # comm is cut to 15 bytes: nvidia-cuda-mps-server


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:   # comm: any bytes
            return fh.read().strip()
    except OSError:
        return ""


def _str(v) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
