"""`extends:`: a policy on top of a built-in or another file (core/policy_extends.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pycontain.core.errors import PolicyError
from pycontain.core.policy import builtin_policy, load_policy, load_policy_text, policy_to_dict

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _write(d: Path, name: str, text: str) -> str:
    (d / name).write_text(text)
    return str(d / name)


def _err(path: str) -> PolicyError:
    with pytest.raises(PolicyError) as ei:
        load_policy(path)
    return ei.value


def test_merge_semantics(tmp_path):
    base = builtin_policy("default")
    p = load_policy(_write(tmp_path, "node.yaml", """\
extends: default
name: node
exec:
  deny: [xmrig, mytool]          # xmrig is inherited: not twice
  deny_args: !remove ["*--wallet*"]
network:
  deny: [{ports: [1234]}]
  deny_internal: true
sockets: {deny_packet: false}
"""))
    assert p.name == "node" and p.mode == base.mode                       # scalar overridden / inherited
    assert p.exec.deny == base.exec.deny + ("mytool",)                    # list appended, duplicate dropped
    assert "*--wallet*" not in p.exec.deny_args
    assert len(p.exec.deny_args) == len(base.exec.deny_args) - 1
    assert p.exec.deny_program_args == base.exec.deny_program_args        # untouched section inherited
    assert p.network.deny[:-1] == base.network.deny and p.network.deny[-1].ports == ((1234, 1234),)
    assert p.network.deny_internal and p.network.deny_metadata            # mapping merged key by key
    assert p.sockets.deny_raw and not p.sockets.deny_packet
    assert p.source.endswith("node.yaml")


def test_replace_drops_inherited(tmp_path):
    p = load_policy(_write(tmp_path, "r.yaml", "extends: strict\nexec:\n  deny_args: !replace ['*foo*']\n"))
    assert p.exec.deny_args == ("*foo*",)
    assert p.exec.deny == builtin_policy("strict").exec.deny


def test_policy_show_prints_the_merged_result_which_loads_back(tmp_path):
    p = load_policy(_write(tmp_path, "s.yaml", "extends: default\nexec: {deny: [mytool]}\n"))
    shown = yaml.safe_dump(policy_to_dict(p), sort_keys=False)
    assert "mytool" in shown and "xmrig" in shown and "extends" not in shown
    again = load_policy_text(shown, "shown.yaml")
    assert again.exec == p.exec and again.network == p.network


def test_chain_of_files_relative_to_the_extending_file(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "sub/base.yaml", "extends: default\nexec: {deny: [basetool]}\n")
    p = load_policy(_write(tmp_path, "top.yaml", "extends: sub/base.yaml\nexec: {deny: [toptool]}\n"))
    assert p.exec.deny[-2:] == ("basetool", "toptool") and "xmrig" in p.exec.deny


def test_error_names_the_file_and_line_that_has_it(tmp_path):
    _write(tmp_path, "base.yaml", "extends: default\nnetwork:\n  deny:\n    - cidr: 10.0.0.0/33\n")
    e = _err(_write(tmp_path, "top.yaml", "extends: ./base.yaml\nname: top\n"))
    assert (Path(e.file).name, e.line) == ("base.yaml", 4) and "CIDR" in e.problem
    e = _err(_write(tmp_path, "lock.yaml", "extends: default\n\nexec:\n  deny: ['python*']\n"))
    assert (Path(e.file).name, e.line, e.key.split("[")[0]) == ("lock.yaml", 4, "exec.deny")


@pytest.mark.parametrize("text, line, problem", [
    ("extends: default\nexec:\n  deny_args: !remove ['*--walet*']\n", 3, "not in the base policy"),
    ("name: x\nexec:\n  deny: !remove [xmrig]\n", 3, "nothing here to remove"),
    ("extends: default\nmode: !replace enforce\n", 2, "!replace is for lists"),
    ("extends: nosuch\n", 1, "neither a built-in"),
    ("extends: ./missing.yaml\n", 1, "cannot read the base policy"),
    ("extends: [default]\n", 1, "expected a single value"),
    ("extend: default\n", 1, "unknown key"),
])
def test_bad_extends(tmp_path, text, line, problem):
    e = _err(_write(tmp_path, "p.yaml", text))
    assert e.line == line and problem in e.problem and e.file.endswith("p.yaml"), str(e)


def test_cycles_refused(tmp_path):
    _write(tmp_path, "a.yaml", "extends: ./b.yaml\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\n")
    e = _err(str(tmp_path / "a.yaml"))
    assert "cycle" in e.problem and e.file.endswith("b.yaml")
    e = _err(_write(tmp_path, "self.yaml", "extends: ./self.yaml\n"))
    assert "cycle" in e.problem


def test_shipped_node_policies_extend_the_default():
    base = builtin_policy("default")
    cm = yaml.safe_load((DEPLOY / "kubernetes/configmap.yaml").read_text())["data"]["policy.yaml"]
    for p in (load_policy(str(DEPLOY / "slurm/policy.yaml")), load_policy_text(cm, "configmap policy.yaml")):
        assert p.exec == base.exec and p.network == base.network and p.sockets == base.sockets
        assert p.agents and p.name != "default"
