"""GPU allocation: specs, resolution, orchestrator mapping, policy keys,
the v1 devices fallback on a fake cgroupfs, and GpuDevices' choices."""

from __future__ import annotations

import os

import pytest

from pycontain.core.errors import GpuUnavailable, PolicyError, UsageError
from pycontain.core.gpu_devices import (
    GpuInfo,
    GpuSpec,
    GpuSpecError,
    denied_minors,
    parse_environ,
    parse_gpu_spec,
    resolve,
    spec_from_environ,
)
from pycontain.core.policy import load_policy_text, policy_to_dict

GPUS = [GpuInfo(0, "GPU-aaa", 1), GpuInfo(1, "GPU-bbb", 0), GpuInfo(2, "GPU-ccc", 2)]


@pytest.mark.parametrize("text,kind,items", [
    ("all", "all", ()), ("none", "none", ()), ("0,2", "list", ("0", "2")),
    ("GPU-aaa, 1", "list", ("GPU-aaa", "1")), ("0,0", "list", ("0",)), (["1"], "list", ("1",)),
])
def test_parse(text, kind, items):
    s = parse_gpu_spec(text)
    assert (s.kind, s.items) == (kind, items)


@pytest.mark.parametrize("text", ["", "0,,1", "gpu0", "-1", "0;1"])
def test_parse_rejects_and_names_the_value(text):
    with pytest.raises(GpuSpecError) as e:
        parse_gpu_spec(text)
    assert "--gpus" in str(e.value)


def test_resolve_by_index_and_uuid_uses_nvml_minors():
    g = resolve(parse_gpu_spec("0,GPU-ccc"), GPUS)
    assert g.allowed_minors() == {1, 2}
    assert g.cuda_visible_devices() == "GPU-aaa,GPU-ccc"
    assert 0 in denied_minors(g) and 1 not in denied_minors(g) and 253 in denied_minors(g)
    assert 254 not in denied_minors(g) and 255 not in denied_minors(g)     # control nodes


def test_resolve_unknown_names_it():
    with pytest.raises(GpuSpecError, match="no GPU 7 "):
        resolve(parse_gpu_spec("0,7"), GPUS)
    with pytest.raises(GpuSpecError, match="GPU-zzz"):
        resolve(parse_gpu_spec("GPU-zzz"), GPUS)


def test_all_and_none():
    assert not resolve(parse_gpu_spec("all"), GPUS).confines
    none = resolve(parse_gpu_spec("none"), GPUS)
    assert none.confines and none.allowed_minors() == frozenset() and none.cuda_visible_devices() == ""


@pytest.mark.parametrize("env,want", [
    ({"SLURM_JOB_GPUS": "0,2", "CUDA_VISIBLE_DEVICES": "0,1"}, ("list", ("0", "2"))),
    ({"SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "0,1"}, ("list", ("1",))),
    ({"NVIDIA_VISIBLE_DEVICES": "GPU-bbb"}, ("list", ("GPU-bbb",))),
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, ("none", ())),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, ("all", ())),
    ({"CUDA_VISIBLE_DEVICES": "GPU-aaa"}, ("list", ("GPU-aaa",))),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, None),          # renumbered indexes: not trusted
    ({"PATH": "/bin"}, None),
])
def test_orchestrator_environment(env, want):
    s = spec_from_environ(env)
    assert (None if s is None else (s.kind, s.items)) == want


def test_parse_environ():
    assert parse_environ(b"A=1\0B=x=y\0junk\0") == {"A": "1", "B": "x=y"}


def test_policy_keys():
    p = load_policy_text("name: x\ngpu:\n  devices: [0, GPU-bbb]\n")
    assert p.gpu.devices == GpuSpec("list", ("0", "GPU-bbb"), "gpu.devices")
    assert policy_to_dict(p)["gpu"]["devices"] == ["0", "GPU-bbb"]
    assert load_policy_text("name: x\ngpu:\n  devices: orchestrator\n").gpu.devices.kind == "orchestrator"
    with pytest.raises(PolicyError, match="gpu.devices: 'gpu-9' is not a GPU index"):
        load_policy_text("name: x\ngpu:\n  devices: [gpu-9]\n")


# ---- GpuDevices (edge) with a fake cgroup and /proc ------------------------------

class FakeCg:
    def __init__(self, tmp, pids=(), v1_devices=None):
        self.name, self.v2_path = "a", str(tmp)
        self._pids = list(pids)
        self.v1_paths = {"devices": v1_devices} if v1_devices else {}

    def pids(self):
        return self._pids


def devices(spec=None, gpus=GPUS, **kw):
    from pycontain.gpu.devices import GpuDevices
    return GpuDevices(spec, gpus, nvml_status="ok", **kw)


def test_unknown_gpu_in_policy_is_a_usage_error():
    with pytest.raises(UsageError, match="no GPU 5"):
        devices(parse_gpu_spec("5", "gpu.devices"))


def test_run_gpus_overrides_policy_and_sets_cuda_visible_devices(tmp_path, monkeypatch):
    d = devices(parse_gpu_spec("all", "gpu.devices"))
    d.request("a", "1")
    monkeypatch.setattr(d, "_confine", lambda cg, grant: "bpf")
    g = d.confine("a", FakeCg(tmp_path))
    assert g.allowed_minors() == {0}
    assert d.launch_env("a")["CUDA_VISIBLE_DEVICES"] == "GPU-bbb"
    assert d.status() == {"a": "GPU 1 (bpf)"}


def test_no_nvml_and_gpus_named_fails_unless_allowed():
    with pytest.raises(GpuUnavailable):
        devices(parse_gpu_spec("0", "gpu.devices"), gpus=[])
    assert not devices(parse_gpu_spec("0", "gpu.devices"), gpus=[], allow_no_gpu=True).policy_grant.confines
    assert devices(parse_gpu_spec("none", "gpu.devices"), gpus=[]).policy_grant.confines   # needs no NVML


def test_orchestrator_grant_from_the_jobs_environment(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "environ").write_bytes(b"SLURM_JOB_GPUS=2\0HOME=/\0")
    d = devices(parse_gpu_spec("orchestrator", "gpu.devices"), proc_root=str(proc))
    assert d.grant_for("a", FakeCg(tmp_path, pids=[41, 42])).allowed_minors() == {2}
    # nothing said: no GPU (fail closed)
    assert d.grant_for("a", FakeCg(tmp_path, pids=[41])).allowed_minors() == frozenset()


def _proc_entry(proc, pid: int, start: int, environ: bytes) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "environ").write_bytes(environ)
    # /proc/PID/stat: the start time is field 22 (comm may hold ') ')
    fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 30
    (proc / str(pid) / "stat").write_text(f"{pid} (a) b) " + " ".join(fields) + "\n")


def test_orchestrator_never_takes_every_gpu_from_the_environment(tmp_path):
    """`exec env NVIDIA_VISIBLE_DEVICES=all ...` (or SLURM_STEP_GPUS=all):
    the agent writes its own environment; "all" gives no GPU (fail closed)."""
    proc = tmp_path / "proc"
    _proc_entry(proc, 42, 100, b"NVIDIA_VISIBLE_DEVICES=all\0")
    _proc_entry(proc, 43, 200, b"SLURM_STEP_GPUS=all\0")
    d = devices(parse_gpu_spec("orchestrator", "gpu.devices"), proc_root=str(proc))
    for pids in ([42], [43]):
        g = d.grant_for("a", FakeCg(tmp_path, pids=pids))
        assert g.confines and g.allowed_minors() == frozenset(), g
        assert "all refused" in g.source


def test_orchestrator_asks_the_oldest_process_first(tmp_path):
    """The job's first process got the orchestrator's grant (GPU 1); a
    younger one the agent started with its own environment claims more."""
    proc = tmp_path / "proc"
    _proc_entry(proc, 41, 900, b"SLURM_STEP_GPUS=0,1,2\0")       # younger, listed first
    _proc_entry(proc, 42, 100, b"SLURM_STEP_GPUS=1\0")
    d = devices(parse_gpu_spec("orchestrator", "gpu.devices"), proc_root=str(proc))
    assert d.grant_for("a", FakeCg(tmp_path, pids=[41, 42])).allowed_minors() == {0}   # GPU 1's minor


def test_falls_back_to_v1_devices_when_the_program_cannot_load(tmp_path, monkeypatch):
    from pycontain.core.errors import EnvironmentProblem
    from pycontain.kernel import devices as kdev
    v1 = tmp_path / "devices" / "agent"
    v1.mkdir(parents=True)
    (v1 / "devices.deny").write_text("")
    written = []
    monkeypatch.setattr("pycontain.actuate.cgroups.fs.write", lambda p, v: written.append((os.path.basename(p), v)))

    def no_bpf(self, path, minors):
        raise EnvironmentProblem("no BPF")
    monkeypatch.setattr(kdev.DeviceProgram, "confine", no_bpf)
    d = devices(parse_gpu_spec("0", "gpu.devices"))
    d.confine("a", FakeCg(tmp_path, v1_devices=str(v1)))
    assert d.how["a"] == "v1 devices"
    assert ("devices.deny", "c 195:0 rwm") in written and ("devices.deny", "c 195:1 rwm") not in written
    assert len(written) == 253                       # every GPU minor but the granted one
    with pytest.raises(EnvironmentProblem, match="no v1 devices cgroup"):
        devices(parse_gpu_spec("0", "gpu.devices")).confine("b", FakeCg(tmp_path))


def test_grant_bits():
    from pycontain.kernel.devices import grant_bits
    g = grant_bits([0, 63, 64, 200])
    assert list(g.bits) == [1 | 1 << 63, 1, 0, 1 << 8]
