"""Pod and job identity from cgroup paths (core/orchestrator.py): every
Kubernetes QoS class under both cgroup drivers and three runtimes, Slurm
under cgroup v1/v2 layouts."""

import pytest

from pycontain.core.orchestrator import orchestrator_identity

UID = "8f3c2a1e-5b6d-4c7e-9f80-112233445566"
UID_ = UID.replace("-", "_")
CID = "4e1b2c3d" * 8


@pytest.mark.parametrize("path,qos", [
    # cgroupfs driver
    (f"/kubepods/pod{UID}/{CID}", "guaranteed"),
    (f"/kubepods/burstable/pod{UID}/{CID}", "burstable"),
    (f"/kubepods/besteffort/pod{UID}/{CID}", "besteffort"),
    # systemd driver, containerd / docker / cri-o
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", "guaranteed"),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope",
     "burstable"),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope",
     "besteffort"),
    # v1 hierarchy prefix, nested runtime dirs under the container
    (f"/sys/fs/cgroup/cpu/kubepods/burstable/pod{UID}/{CID}/sub", "burstable"),
])
def test_kubernetes_pod_and_container(path, qos):
    assert orchestrator_identity(path) == {"k8s_pod_uid": UID, "k8s_container_id": CID, "k8s_qos": qos}


def test_kubernetes_pod_without_container():
    assert orchestrator_identity(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice") \
        == {"k8s_pod_uid": UID, "k8s_qos": "burstable"}


@pytest.mark.parametrize("path,want", [
    ("/slurm/uid_1000/job_42/step_0", {"slurm_job": "42", "slurm_step": "0", "slurm_uid": "1000"}),
    ("/slurm/uid_1000/job_42/step_batch/task_3", {"slurm_job": "42", "slurm_step": "batch", "slurm_uid": "1000"}),
    ("/slurm/uid_7/job_9", {"slurm_job": "9", "slurm_uid": "7"}),
    ("/system.slice/slurmstepd.scope/job_77/step_extern", {"slurm_job": "77", "slurm_step": "extern"}),
    ("/system.slice/slurmstepd.scope/job_77/step_3/user/task_0", {"slurm_job": "77", "slurm_step": "3"}),
    ("/system.slice/node01_slurmstepd.scope/job_5/step_interactive", {"slurm_job": "5",
                                                                      "slurm_step": "interactive"}),
])
def test_slurm_job_and_step(path, want):
    assert orchestrator_identity(path) == want


@pytest.mark.parametrize("path", [
    "/", "/user.slice/user-1000.slice/session-3.scope", "/pycontain/agent-1",
    "/kubepods/burstable/podnot-a-uid/abc", "/myslurm_job_4/x", "/job_5/step_1",
])
def test_other_paths_have_no_identity(path):
    assert orchestrator_identity(path) == {}
