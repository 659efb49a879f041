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
    tests = sorted(p.name for p in (DEPLOY / "prometheus").glob("*.test.yml"))
    assert "idle-node.test.yml" in tests
    r = subprocess.run([promtool, "test", "rules", *tests], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("SUCCESS") == len(tests), r.stdout + r.stderr


def test_the_idle_node_test_covers_every_alert():
    """An alert added later must be proven quiet on an idle healthy node too."""
    rules = yaml.safe_load((DEPLOY / "prometheus/pycontain-alerts.yml").read_text())
    idle = yaml.safe_load((DEPLOY / "prometheus/idle-node.test.yml").read_text())
    quiet = {t["alertname"] for case in idle["tests"] for t in case["alert_rule_test"] if t["exp_alerts"] == []}
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} <= quiet


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


def test_the_slurm_prolog_fails_closed_unless_told_to_fail_open(tmp_path):
    """A prolog that exits non-zero drains the node and requeues the job
    (docs/deploy.md): the shipped one does so when the daemon does not take
    the job, and lets it start only with PYCONTAIN_FAIL_OPEN=1."""
    fake = tmp_path / "pycontain"
    fake.write_text("#!/bin/sh\necho 'error: no pycontain daemon listening' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, SLURM_JOB_ID="78", PYCONTAIN=str(fake), PYCONTAIN_CGROUP_ROOT=str(tmp_path / "cg"))
    prolog = str(DEPLOY / "slurm/prolog.sh")
    r = subprocess.run([prolog], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "failing closed" in r.stderr
    r = subprocess.run([prolog], env=dict(env, PYCONTAIN_FAIL_OPEN="1"), capture_output=True, text=True)
    assert r.returncode == 0


def test_dashboard_filters_every_panel_by_instance_and_agent(tmp_path):
    dash = json.loads((DEPLOY / "grafana/pycontain.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "instance", "agent"} <= variables.keys()
    assert "$instance" in variables["agent"]["query"]["query"]        # agents of the chosen nodes
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for e in exprs:
        for m in re.finditer(r"\b(pycontain_[a-z_]+)(\{[^}]*\})?", e):
            labels = m.group(2) or ""
            assert 'instance=~"$instance"' in labels, e
            if m.group(1).startswith(("pycontain_agent_", "pycontain_violations", "pycontain_actions",
                                      "pycontain_events_total")):
                assert 'agent=~"$agent"' in labels, e
    # every expression is valid PromQL once Grafana substitutes the variables
    promtool = need("promtool")
    rules = {"groups": [{"name": "dash", "rules": [
        {"record": f"dash:panel{i}", "expr": e.replace("$instance", ".*").replace("$agent", ".*")}
        for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dash.yml"
    f.write_text(yaml.safe_dump(rules))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(path, os.X_OK):
        skip_or_fail("hadolint not installed (scripts/install-test-tools.sh)")
    return path


def test_dockerfile_lints_clean_with_hadolint(tmp_path):
    hadolint = _hadolint()
    r = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # the linter is live: the same file with a classic mistake fails
    bad = tmp_path / "Dockerfile"
    bad.write_text((REPO / "Dockerfile").read_text().replace("--no-install-recommends ", "")
                   + "RUN cd /tmp && ls\n")
    r = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3015" in r.stdout and "DL3003" in r.stdout


def test_the_daemonset_runs_the_image_the_dockerfile_builds():
    text = (REPO / "Dockerfile").read_text()
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert re.search(r"^FROM ubuntu:\d+\.\d+$", text, re.M)
    assert re.search(r"apt-get install .*python3-bpfcc python3-seccomp", text, re.S)
    assert "pip install --no-cache-dir /src" in text and "--system-site-packages" in text
    assert "COPY ebpf /usr/share/pycontain/ebpf" in text and "PYCONTAIN_EBPF_DIR=/usr/share/pycontain/ebpf" in text
    assert f'org.opencontainers.image.version="{version}"' in text
    image = f"ghcr.io/pycontain/pycontain:{version}"
    assert f"docker build -t {image} ." in text
    ds = next(d for d in yaml.safe_load_all((DEPLOY / "kubernetes/daemonset.yaml").read_text())
              if d["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == image
    assert {"operator": "Exists"} in spec["tolerations"]       # every taint
