"""GPU allocation enforced by the kernel: an agent opens only its /dev/nvidiaN.

The tests make their own device nodes (char 195:N, what the NVIDIA driver's
/dev/nvidiaN are) in a temp dir. Without a driver, opening one fails with
ENXIO (no device behind the number) when the cgroup allows it, and with EPERM
when the device program or the v1 devices controller refuses it; the agent
reports which, and the test reads that from outside.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys

import pytest

from tests.fake_nvml.build import env_for

PYCONTAIN = [sys.executable, "-m", "pycontain.cli"]
# the fake device nodes are root-only: these tests are about the device cgroup
AS_ROOT = ["run", "--user", "root"]
ROOT_RUN = PYCONTAIN + AS_ROOT


OPENER = r"""
import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        r = "ok"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e))
    print(os.path.basename(path), r)
print("CVD", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
"""


@pytest.fixture
def nodes(tmp_path):
    """nvidia0, nvidia1, nvidia2 and nvidiactl (195:255) in a temp dir."""
    out = []
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidia2", 2), ("nvidiactl", 255)):
        p = tmp_path / name
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(195, minor))
        out.append(str(p))
    scen = tmp_path / "scenario.txt"
    # minors deliberately not equal to the indexes: they come from NVML
    scen.write_text("device 0 uuid=GPU-aaa minor=1\ndevice 1 uuid=GPU-bbb minor=0\ndevice 2 uuid=GPU-ccc minor=2\n")
    return out, scen


def outcomes(stdout: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)


def test_without_pycontain_every_node_opens_to_enxio(privileged, nodes):
    paths, _ = nodes
    r = subprocess.run([sys.executable, "-c", OPENER, *paths], capture_output=True, text=True, timeout=30)
    got = outcomes(r.stdout)
    assert [got[n] for n in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl")] == ["ENXIO"] * 4, r.stdout


def test_agent_opens_only_its_gpus(privileged, nodes):
    paths, scen = nodes
    r = subprocess.run(ROOT_RUN + ["--gpus", "0,GPU-ccc", "--", sys.executable, "-c", OPENER, *paths],
                       env=env_for(scen), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = outcomes(r.stdout)
    # GPU 0 is minor 1, GPU 2 minor 2: nvidia0 (GPU 1) is not the agent's
    assert got["nvidia1"] == "ENXIO" and got["nvidia2"] == "ENXIO", r.stdout
    assert got["nvidia0"] == "EPERM", r.stdout
    assert got["nvidiactl"] == "ENXIO", r.stdout          # control node stays usable
    assert got["CVD"] == "GPU-aaa,GPU-ccc"


def test_gpus_none_denies_every_gpu_but_not_the_control_node(privileged, nodes):
    paths, scen = nodes
    r = subprocess.run(ROOT_RUN + ["--gpus", "none", "--", sys.executable, "-c", OPENER, *paths],
                       env=env_for(scen), capture_output=True, text=True, timeout=60)
    got = outcomes(r.stdout)
    assert [got[n] for n in ("nvidia0", "nvidia1", "nvidia2")] == ["EPERM"] * 3, r.stdout
    assert got["nvidiactl"] == "ENXIO" and got["CVD"] == ""


def test_policy_gpu_devices(privileged, nodes, tmp_path):
    paths, scen = nodes
    pol = tmp_path / "p.yaml"
    pol.write_text("name: gpu-dev\ngpu:\n  devices: [1]\n")
    r = subprocess.run(ROOT_RUN + ["--policy", str(pol), "--", sys.executable, "-c", OPENER, *paths],
                       env=env_for(scen), capture_output=True, text=True, timeout=60)
    got = outcomes(r.stdout)
    assert got["nvidia0"] == "ENXIO" and got["nvidia1"] == "EPERM" and got["nvidia2"] == "EPERM", r.stdout
    assert got["CVD"] == "GPU-bbb"


def test_unknown_gpu_is_one_error_line_before_any_probe(privileged, nodes):
    _, scen = nodes
    r = subprocess.run(PYCONTAIN + ["run", "--gpus", "0,7", "--", "true"], env=env_for(scen),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "7" in errors[0], r.stderr
    assert "compiling" not in r.stderr


def test_v1_devices_controller_denies_with_eperm(privileged, nodes):
    """Hybrid hosts: the fallback, the agent's own v1 devices cgroup."""
    from pycontain.actuate.devices_v1 import confine_v1
    mount = _v1_devices_mount()
    if mount is None:
        pytest.skip("no cgroup v1 devices controller on this host")
    paths, _ = nodes
    d = os.path.join(mount, f"pycontain-test-{secrets.token_hex(3)}")
    os.mkdir(d)
    try:
        confine_v1(d, [0, 2])
        pre = f"import os; open({os.path.join(d, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
        r = subprocess.run([sys.executable, "-c", pre + OPENER, *paths], capture_output=True, text=True, timeout=30)
        got = outcomes(r.stdout)
        assert got["nvidia0"] == "EPERM" and got["nvidia2"] == "EPERM", r.stdout + r.stderr
        assert got["nvidia1"] == "ENXIO" and got["nvidiactl"] == "ENXIO", r.stdout
    finally:
        os.rmdir(d)


def _v1_devices_mount() -> str | None:
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            pre, _, post = line.partition(" - ")
            f = post.split()
            if f and f[0] == "cgroup" and "devices" in f[2].split(","):
                return pre.split()[4]
    return None
