"""Rules have stable ids (issue 13 part 5): an author's `id:`, or one derived
from the rule's content, never its position; severity and tags go to the
audit log."""

import json

import pytest

from pycontain.core.engine import Engine
from pycontain.core.errors import PolicyError
from pycontain.core.kernel_rules import compile_policy, exec_verdict, net_verdict
from pycontain.core.policy import load_policy_text, policy_to_dict
from pycontain.core.rule_ids import ID_MAX, meta_by_id

BASE = """
exec:
  deny:
    - xmrig
    - "/opt/evil/*"
  deny_args: ["*stratum+*"]
network:
  deny:
    - {cidr: 198.51.100.0/24}
    - {ports: [3333], protocol: tcp}
"""

INSERTED = """
exec:
  deny:
    - nbminer
    - xmrig
    - "/opt/extra/*"
    - "/opt/evil/*"
  deny_args: ["*kawpow*", "*stratum+*"]
network:
  deny:
    - {cidr: 203.0.113.0/24, ports: [9]}
    - {cidr: 198.51.100.0/24}
    - {ports: [3333], protocol: tcp}
"""


def names(p):
    t = compile_policy(p)
    e = Engine(p)
    return {
        "xmrig": t.rules[exec_verdict(t, "/tmp/xmrig", ["xmrig"])],
        "args": t.rules[exec_verdict(t, "/bin/a", ["a", "stratum+tcp://x"])],
        "path": e.user_exec_rule(b"/opt/evil/x", [b"x"])[0],
        "cidr": t.rules[net_verdict(t, "198.51.100.7", 443)],
        "port": t.rules[net_verdict(t, "192.0.2.200", 3333)],
    }


def test_inserting_rules_renames_none():
    before, after = names(load_policy_text(BASE)), names(load_policy_text(INSERTED))
    assert before == after == {"xmrig": "exec.deny:xmrig", "args": "exec.deny_args:*stratum+*",
                               "path": "exec.deny:/opt/evil/*", "cidr": "network.deny:198.51.100.0/24",
                               "port": "network.deny:any tcp/3333"}


def test_author_ids_severity_and_tags():
    p = load_policy_text("""
exec:
  deny:
    - {name: xmrig, id: miners, severity: critical, tags: [mining, rome]}
    - {name: "/opt/miners/*", id: miners, severity: critical, tags: [mining, rome]}
  deny_program_args:
    - {program: ssh, args: ["-R*"], id: reverse-tunnel, severity: high}
network:
  deny:
    - {ports: [3333], id: pool-ports, severity: low, tags: [mining]}
""")
    t = compile_policy(p)
    assert t.rules[exec_verdict(t, "/tmp/xmrig", ["xmrig"])] == "miners"
    e = Engine(p)
    # a shared id must not hide the user-space rule behind the kernel one
    assert e.user_exec_rule(b"/opt/miners/x", [b"x"])[0] == "miners"
    assert e.user_exec_rule(b"/usr/bin/ssh", [b"ssh", b"-R2222:h:22", b"host"])[0] == "reverse-tunnel"
    assert t.rules[net_verdict(t, "192.0.2.200", 3333)] == "pool-ports"
    meta = meta_by_id(p)
    assert (meta["miners"].severity, meta["miners"].tags) == ("critical", ("mining", "rome"))
    assert (meta["pool-ports"].severity, meta["pool-ports"].tags) == ("low", ("mining",))
    assert meta["reverse-tunnel"].severity == "high"


def test_policy_show_keeps_ids_and_loads_back():
    text = "exec:\n  deny:\n    - {name: xmrig, id: miners, severity: high}\n    - nbminer\n" \
           "network:\n  deny:\n    - {ports: [3333], id: pool-ports, tags: [mining]}\n"
    p = load_policy_text(text)
    d = policy_to_dict(p)
    assert d["exec"]["deny"] == [{"name": "xmrig", "id": "miners", "severity": "high"}, "nbminer"]
    assert d["network"]["deny"][0]["id"] == "pool-ports" and d["network"]["deny"][0]["tags"] == ["mining"]
    again = load_policy_text(json.dumps(d))
    assert again.rule_meta == p.rule_meta


def test_long_rules_get_bounded_distinct_ids():
    a = "x" * 200 + "a"
    b = "x" * 200 + "b"
    p = load_policy_text(f"exec:\n  deny: ['{a}', '{b}']\n")
    ids = [p.rule_meta[f"exec.deny[{i}]"].id for i in (0, 1)]
    assert ids[0] != ids[1] and all(len(i) <= ID_MAX for i in ids)


@pytest.mark.parametrize("text,line,key,problem", [
    ("exec:\n  deny:\n    - {name: xmrig, severity: urgent}\n", 3, "exec.deny[0].severity", "not one of"),
    ("exec:\n  deny:\n    - {name: xmrig, id: 'has space'}\n", 3, "exec.deny[0].id", "rule id"),
    ("exec:\n  deny:\n    - {id: x}\n", 3, "exec.deny[0]", "needs 'name'"),
    ("network:\n  deny:\n    - {ports: [1], tags: [BAD TAG]}\n", 3, "network.deny[0].tags[0]", "tag"),
    ("exec:\n  deny:\n    - {name: a, id: g, severity: high}\n    - {name: b, id: g, severity: low}\n",
     4, "exec.deny[1]", "another severity"),
])
def test_bad_rule_metadata_is_an_error_with_line_and_key(text, line, key, problem):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    assert (e.value.line, e.value.key) == (line, key) and problem in e.value.problem


def test_every_error_inside_a_section_is_reported():
    text = ("exec:\n  deny: ['[bad', ok, '[worse']\n"
            "network:\n  deny:\n    - cidr: 10.0.0.0/33\n    - {ports: [70000]}\n    - cidr: nope\n")
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    got = [(x.line, x.key) for x in e.value.all()]
    assert got == [(2, "exec.deny[0]"), (2, "exec.deny[2]"), (5, "network.deny[0].cidr"),
                   (6, "network.deny[1].ports[0]"), (7, "network.deny[2].cidr")]
