"""Deployment artefacts, validated by the real tools where they are installed
(scripts/install-test-tools.sh installs them; under CI=true a missing tool fails)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from pycontain.observe.metrics import make_registry
from tests.conftest import REPO, skip_or_fail
from tests.unit.test_observability import hostile_state

DEPLOY = REPO / "deploy"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        skip_or_fail(f"{tool} not installed (scripts/install-test-tools.sh)")
    return path


def test_promtool_check_and_unit_test_alert_rules():
    promtool = need("promtool")
    r = subprocess.run([promtool, "check", "rules", "pycontain-alerts.yml"], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", "pycontain-alerts.test.yml"], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def exported_names() -> set[str]:
    text = generate_latest(make_registry(hostile_state())).decode()
    return {m.group(1) for m in re.finditer(r"^(pycontain_[a-z_]+?)(?:\{| )", text, re.M)}


def test_dashboard_and_alerts_use_only_exported_metrics():
    names = exported_names()
    dash = json.loads((DEPLOY / "grafana/pycontain.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus/pycontain-alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {n for e in exprs for n in re.findall(r"\b(pycontain_[a-z_]+)\b", e)}
    assert used and used <= names, used - names


def test_systemd_unit_verifies(tmp_path):
    need("systemd-analyze")
    unit = tmp_path / "pycontain.service"
    text = (DEPLOY / "systemd/pycontain.service").read_text()
    # verify resolves ExecStart: point it at a binary that exists on this machine
    fake = tmp_path / "pycontain"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit.write_text(text.replace("/usr/local/bin/pycontain", str(fake)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "pycontain.service" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_daemonset_has_what_bpf_and_nvml_need():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes/daemonset.yaml").read_text()))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert ds["apiVersion"] == "apps/v1" and spec["hostPID"] is True
    c = spec["containers"][0]
    assert c["securityContext"]["privileged"] is True
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/btf", "/lib/modules",
            "/usr/src", "/run/pycontain"} <= mounts
    vols = {v["name"] for v in spec["volumes"]}
    assert {m["name"] for m in c["volumeMounts"]} <= vols
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    cm = yaml.safe_load((DEPLOY / "kubernetes/configmap.yaml").read_text())
    from pycontain.core.policy import load_policy_text
    load_policy_text(cm["data"]["policy.yaml"], "configmap policy.yaml")


def test_kubernetes_schema(tmp_path):
    kv = shutil.which("kubeconform")
    if kv is None:
        try:
            import kubernetes_validate  # noqa: F401
        except ImportError:
            skip_or_fail("no offline Kubernetes schema validator (kubeconform or kubernetes-validate)")
        for f in ("daemonset.yaml", "configmap.yaml"):
            r = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict",
                                str(DEPLOY / "kubernetes" / f)],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
    else:
        r = subprocess.run([kv, "-strict", "-summary", str(DEPLOY / "kubernetes")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_slurm_scripts_shellcheck_and_behaviour(tmp_path):
    sc = need("shellcheck")
    scripts = [DEPLOY / "slurm/prolog.sh", DEPLOY / "slurm/epilog.sh"]
    r = subprocess.run([sc, *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    log = tmp_path / "calls"
    fake = tmp_path / "pycontain"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    env = dict(os.environ, SLURM_JOB_ID="77", PYCONTAIN=str(fake), PYCONTAIN_CGROUP_ROOT=str(tmp_path / "cg"))
    assert subprocess.run([str(scripts[0])], env=env).returncode == 0
    assert subprocess.run([str(scripts[1])], env=env).returncode == 0
    calls = log.read_text().splitlines()
    assert calls[0] == f"adopt --cgroup {tmp_path}/cg/system.slice/slurmstepd.scope/job_77 --name job-77"
    assert calls[1] == "release job-77"
    # the epilog never fails the job's epilog, even when the daemon is gone
    fake.write_text("#!/bin/sh\nexit 1\n")
    assert subprocess.run([str(scripts[1])], env=env, capture_output=True).returncode == 0
    from pycontain.core.policy import load_policy
    load_policy(str(DEPLOY / "slurm/policy.yaml"))
