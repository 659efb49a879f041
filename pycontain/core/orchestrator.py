"""Who started an agent, read from its cgroup path (pure).

A fleet asks "which pod / which Slurm job was that?" of every audit record.
The orchestrators say it in the cgroup path, in a few fixed shapes:

Kubernetes (kubelet), every QoS class, both cgroup drivers:
  cgroupfs  /kubepods/pod<uid>/<cid>                       (guaranteed)
            /kubepods/burstable/pod<uid>/<cid>
            /kubepods/besteffort/pod<uid>/<cid>
  systemd   /kubepods.slice/kubepods-pod<uid_>.slice/cri-containerd-<cid>.scope
            /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/docker-<cid>.scope
            ... crio-<cid>.scope, with '-' in the pod UID written as '_'
Slurm (task/cgroup):
  v1 and v2 /slurm/uid_<N>/job_<J>/step_<S>[/task_<T>]
  v2        /system.slice/slurmstepd.scope/job_<J>/step_<S>[/user/task_<T>]
            (also under a node-named slurmstepd.scope such as
            /system.slice/node1_slurmstepd.scope)

Written by hand: no maintained library parses these (each agent and
exporter keeps its own regexes, as here).
"""

from __future__ import annotations

import re

_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_CID = r"[0-9a-fA-F]{12,64}"
_QOS = {"burstable": "burstable", "besteffort": "besteffort"}

# cgroupfs driver: /kubepods[/qos]/pod<uid>[/<cid>]
_K8S_CGROUPFS = re.compile(rf"(?:^|/)kubepods(?:/(?P<qos>burstable|besteffort))?/pod(?P<uid>{_UID})"
                           rf"(?:/(?P<cid>{_CID}))?(?:/|$)")
# systemd driver: kubepods[-qos]-pod<uid_>.slice[/<runtime>-<cid>.scope]
_K8S_SYSTEMD = re.compile(rf"kubepods(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>{_UID})\.slice"
                          rf"(?:/(?:(?P<rt>cri-containerd|docker|crio|containerd)-)?(?P<cid>{_CID})\.scope)?")
_SLURM = re.compile(r"(?:^|/)(?:slurm(?:/uid_(?P<uid>\d+))?|[^/]*slurmstepd\.scope)/job_(?P<job>\d+)"
                    r"(?:/step_(?P<step>[a-z0-9_]+))?(?:/|$)")


def orchestrator_identity(cgroup_path: str) -> dict[str, str]:
    """``{"k8s_pod_uid", "k8s_container_id", "k8s_qos"}`` or ``{"slurm_job",
    "slurm_step", "slurm_uid"}`` (the keys the path gives), or {}."""
    m = _K8S_SYSTEMD.search(cgroup_path) or _K8S_CGROUPFS.search(cgroup_path)
    if m is not None:
        out = {"k8s_pod_uid": m.group("uid").replace("_", "-").lower(),
               "k8s_qos": _QOS.get(m.group("qos") or "", "guaranteed")}
        if m.group("cid"):
            out["k8s_container_id"] = m.group("cid").lower()
        return out
    s = _SLURM.search(cgroup_path)
    if s is not None:
        out = {"slurm_job": s.group("job")}
        if s.group("step"):
            out["slurm_step"] = s.group("step")
        if s.group("uid"):
            out["slurm_uid"] = s.group("uid")
        return out
    return {}
