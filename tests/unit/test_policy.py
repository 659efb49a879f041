"""The policy language: typed result, precise errors, lock-out checks, built-ins."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pycontain.core.decisions import Action
from pycontain.core.errors import PolicyError
from pycontain.core.policy import GpuPolicy, builtin_policy, load_policy, load_policy_text, policy_to_dict

FULL = """\
name: my-agents
mode: enforce
agents:
  - name: trainer
    cgroup: "system.slice/slurmstepd.scope/job_*"
  - {name: web, systemd_unit: "agent-*.service"}
budgets: {cpu: 2, memory: 16GiB, pids: 512}
gpu:
  required: false
  memory: 8GiB
  sm_util: {max: 80, window: 30s}
  allowed_programs: [python3, "/opt/conda/bin/*"]
  correlate_unapproved_connect: true
  throttle: {duty_cycle: 0.5, period: 1s}
  sample_interval: 2s
exec:
  mode: deny-list
  deny: [xmrig, "*miner*"]
  deny_args: ["stratum*://*", "--donate-level*"]
network:
  default: allow
  allow: [{cidr: 10.1.0.0/16, ports: [443]}, {host: pypi.org, ports: [443]}]
  deny: [{ports: [3333, 4444]}, {port_range: "5555-5560", protocol: tcp}, {cidr: 169.254.169.254/32}]
  deny_internal: false
  deny_metadata: true
  detect: [stratum]
  resolve_interval: 5m
sockets: {deny_raw: true, deny_packet: true}
actions:
  exec: kill-process
  stratum: kill
  memory: throttle-then-kill
  gpu_util: {ladder: [alert, throttle, kill], grace: 30s}
escalation: {grace: 10s}
"""


def test_full_example_parses_to_typed_values():
    p = load_policy_text(FULL, "full.yaml")
    assert p.name == "my-agents" and p.mode == "enforce" and p.source == "full.yaml"
    assert [a.name for a in p.agents] == ["trainer", "web"]
    assert p.agents[0].cgroup.startswith("system.slice") and p.agents[1].systemd_unit == "agent-*.service"
    assert p.budgets.cpu == 2.0 and p.budgets.memory_bytes == 16 << 30 and p.budgets.pids == 512
    assert p.budgets.memory_high_bytes == int((16 << 30) * 0.9)          # default 90%
    assert p.gpu == GpuPolicy(required=False, memory_bytes=8 << 30, sm_util_max=80.0, sm_util_window_s=30.0,
                              allowed_programs=("python3", "/opt/conda/bin/*"), sample_interval_s=2.0)
    assert p.network.resolve_interval_s == 300.0
    assert p.network.deny[0].ports == ((3333, 3333), (4444, 4444))
    assert p.network.deny[1].ports == ((5555, 5560),) and p.network.deny[1].protocol == "tcp"
    assert p.network.allow[1].hosts == ("pypi.org",)
    assert p.actions["memory"].ladder == (Action.THROTTLE, Action.KILL)
    assert p.actions["gpu_util"].ladder == (Action.ALERT, Action.THROTTLE, Action.KILL)
    assert p.actions["gpu_util"].grace_s == 30.0 and p.actions["memory"].grace_s == 10.0
    assert p.actions["exec"].ladder == (Action.KILL_PROCESS,)
    assert p.actions["network"].ladder == (Action.DENY,)                 # default


def test_frozen_and_replace_monitor():
    p = load_policy_text(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"
    assert dataclasses.replace(p, mode="monitor").mode == "monitor"


@pytest.mark.parametrize("text,line,key,words", [
    ("name: t\nnetwork:\n  deny:\n    - cidr: 10.0.0.0/33\n", 4, "network.deny[0].cidr", "not a valid CIDR"),
    ("name: t\nnetwork:\n  deny:\n    - {ports: [1]}\n    - cidr: 10.0.0.0/33\n", 5, "network.deny[1].cidr", "CIDR"),
    ("budgets:\n  memroy: 1GiB\n", 2, "budgets.memroy", "unknown key"),
    ("budgets:\n  memory: 16 gigs\n", 2, "budgets.memory", "not a size"),
    ("budgets:\n  memory: yes\n", 2, "budgets.memory", "size"),
    ("budgets:\n  cpu: lots\n", 2, "budgets.cpu", "expected a number"),
    ("budgets:\n  cpu: 0.001\n", 2, "budgets.cpu", "out of range"),
    ("budgets:\n  pids: 4\n", 2, "budgets.pids", "out of range"),
    ("budgets:\n  memory: 1MiB\n", 2, "budgets.memory", "16MiB"),
    ("budgets:\n  memory: 1GiB\n  memory_high: 2GiB\n", 3, "budgets.memory_high", "must not exceed"),
    ("gpu:\n  sm_util: {max: 180}\n", 2, "gpu.sm_util.max", "out of range"),
    ("gpu:\n  sample_interval: soon\n", 2, "gpu.sample_interval", "not a duration"),
    ("gpu:\n  sample_interval: -1\n", 2, "gpu.sample_interval", "positive"),
    ("network:\n  deny:\n    - ports: [70000]\n", 3, "network.deny[0].ports[0]", "out of range"),
    ("network:\n  deny:\n    - port_range: \"60-50\"\n", 3, "network.deny[0].port_range", "invalid"),
    ("network:\n  deny:\n    - {protocol: sctp, ports: [1]}\n", 3, "network.deny[0].protocol", "not one of"),
    ("network:\n  allow:\n    - host: \"bad host!\"\n", 3, "network.allow[0].host", "not a valid host"),
    ("network:\n  default: maybe\n", 2, "network.default", "not one of"),
    ("exec:\n  deny: [\"[abc\"]\n", 2, "exec.deny[0]", "not a valid glob"),
    ("exec:\n  deny: xmrig\n", 2, "exec.deny", "expected a list"),
    ("mode: audit\n", 1, "mode", "not one of"),
    ("actions:\n  exec: explode\n", 2, "actions.exec", "not an action"),
    ("actions:\n  cpu: {grace: 1s}\n", 2, "actions.cpu", "needs 'ladder'"),
    ("agents:\n  - name: Bad Name\n    command: x\n", 2, "agents[0].name", "not a valid agent name"),
    ("agents:\n  - name: a\n    command: x\n    cgroup: y\n", 2, "agents[0]", "exactly one"),
    ("name: t\nname: u\n", 2, "name", "duplicate"),
])
def test_errors_name_line_and_key(text, line, key, words):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    err = e.value
    assert (err.file, err.line, err.key) == ("p.yaml", line, key), err.message
    assert words in err.message and err.exit_code == 2
    assert err.message.startswith(f"p.yaml:{line}: {key}: ")


def test_unknown_key_suggests_the_closest():
    with pytest.raises(PolicyError) as e:
        load_policy_text("netwrok: {}\n")
    assert e.value.hint == "did you mean 'network'?"


@pytest.mark.parametrize("text,key,hint", [
    ("gpu:\n  sm_utl: {max: 50}\n", "gpu.sm_utl", "did you mean 'sm_util'?"),
    ("gpu:\n  sm_util: {max: 50, windw: 5s}\n", "gpu.sm_util.windw", "did you mean 'window'?"),
    ("gpu:\n  throttle: {zz: 1}\n", "gpu.throttle.zz", "known keys: duty_cycle, period"),
    ("sockets:\n  zz: true\n", "sockets.zz", "known keys: deny_raw, deny_packet, deny_other_families"),
    ("exec:\n  deny_program_args: [{program: ssh, argz: ['-R*']}]\n", "exec.deny_program_args[0].argz",
     "did you mean 'args'?"),
    ("network:\n  deny: [{cdir: 10.0.0.0/8}]\n", "network.deny[0].cdir", "did you mean 'cidr'?"),
    ("network:\n  resolve_intervall: 5m\n", "network.resolve_intervall", "did you mean 'resolve_interval'?"),
    ("budgets:\n  memroy: 1GiB\n", "budgets.memroy", "did you mean 'memory'?"),
    ("escalation:\n  zz: 1s\n", "escalation.zz", "known keys: grace"),
])
def test_every_section_names_its_own_keys(text, key, hint):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    assert (e.value.key, e.value.hint) == (key, hint)


def test_yaml_syntax_error_has_a_line():
    with pytest.raises(PolicyError) as e:
        load_policy_text("name: a\nexec:\n  deny: [unclosed\n", "s.yaml")
    assert e.value.line is not None and "YAML syntax error" in e.value.message


def test_sizes_and_durations():
    p = load_policy_text("budgets: {memory: 1.5G, memory_high: 512MiB}\ngpu: {sample_interval: 500ms, "
                         "sm_util: {max: 50, window: 1h}}\nescalation: {grace: 5m}\n")
    assert p.budgets.memory_bytes == 1_500_000_000 and p.budgets.memory_high_bytes == 512 << 20
    assert p.gpu.sample_interval_s == 0.5 and p.gpu.sm_util_window_s == 3600.0 and p.escalation_grace_s == 300.0
    assert load_policy_text("budgets: {memory: 20000000}").budgets.memory_bytes == 20_000_000


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(str(bad))
    with pytest.raises(PolicyError, match="empty"):
        load_policy_text("")


# ---- lock-out checks -----------------------------------------------------------------

@pytest.mark.parametrize("glob", ["python3*", "python*", "PYTHON3", "/usr/bin/python3", "pycontain", "py*",
                                  "*contain"])
def test_deny_glob_hitting_pycontain_itself_is_rejected(glob):
    with pytest.raises(PolicyError, match="pycontain itself") as e:
        load_policy_text(f'exec:\n  deny: [xmrig, "{glob}"]\n')
    assert e.value.key == "exec.deny[1]" and e.value.line == 2


def test_interpreter_basename_is_protected():
    import os
    exe = os.path.basename(sys.executable)
    with pytest.raises(PolicyError):
        load_policy_text(f'exec:\n  deny: ["{exe}"]\n')


def test_allow_list_must_admit_pycontain():
    with pytest.raises(PolicyError, match="allow-list does not admit") as e:
        load_policy_text("exec:\n  mode: allow-list\n  allow: [bash, git]\n")
    assert e.value.key == "exec.allow"
    ok = load_policy_text("exec:\n  mode: allow-list\n  allow: [bash, 'python*', pycontain]\n")
    assert ok.exec.mode == "allow-list"
    with pytest.raises(PolicyError, match="non-empty"):
        load_policy_text("exec:\n  mode: allow-list\n")


def test_memory_high_too_small_is_rejected():
    with pytest.raises(PolicyError, match="memory_high"):
        load_policy_text("budgets: {memory_high: 1MiB}\n")


# ---- built-ins and round trip ------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "strict"])
def test_builtins_load_and_round_trip(name):
    p = builtin_policy(name)
    assert p.name == name
    text = yaml.safe_dump(policy_to_dict(p), sort_keys=False)
    again = load_policy_text(text, "roundtrip.yaml")
    assert dataclasses.replace(again, source=p.source) == p


def test_full_example_round_trips():
    p = load_policy_text(FULL)
    again = load_policy_text(yaml.safe_dump(policy_to_dict(p)))
    assert again == p


def test_unknown_builtin():
    with pytest.raises(PolicyError, match="no built-in policy"):
        builtin_policy("nope")


def test_default_is_the_rome_policy():
    p = builtin_policy("default")
    assert "stratum" in p.network.detect and p.network.deny_metadata
    assert p.sockets.deny_raw and p.sockets.deny_packet
    assert p.actions["exec"].ladder == (Action.KILL_PROCESS,)
    assert p.actions["network"].ladder == (Action.DENY,)
    assert p.actions["stratum"].ladder == (Action.KILL,)
    ports = {x for r in p.network.deny for lo, hi in r.ports for x in range(lo, hi + 1)}
    assert {3333, 4444, 5555, 7777, 8888, 9999, 14444, 14433, 45560, 45700} <= ports
    assert not ports & {22, 53, 80, 443, 8080}


def test_strict_denies_by_default():
    p = builtin_policy("strict")
    assert p.network.default == "deny" and p.network.deny_internal and p.network.deny_metadata
    assert p.network.allow and p.budgets.cpu and p.budgets.memory_bytes and p.budgets.pids


# ---- the loader never raises anything but PolicyError --------------------------------------

_keys = st.sampled_from(["name", "mode", "agents", "budgets", "gpu", "exec", "network", "sockets", "actions",
                         "escalation", "cpu", "memory", "pids", "deny", "allow", "cidr", "ports", "ladder",
                         "grace", "sm_util", "max", "port_range", "host", "command", "default", "bogus"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                     st.text(max_size=20), st.sampled_from(["16GiB", "1.5G", "30s", "5m", "10.0.0.0/8",
                                                            "kill", "throttle-then-kill", "deny-list",
                                                            "5555-5560", "*miner*", "[", "enforce"]))
_docs = st.recursive(_scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(_keys, kids, max_size=5)), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(_docs)
def test_fuzz_structured_yaml(doc):
    try:
        text = yaml.safe_dump(doc)
    except Exception:
        return
    try:
        load_policy_text(text)
    except PolicyError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    try:
        load_policy_text(text)
    except PolicyError:
        pass
