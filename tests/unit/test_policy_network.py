"""Network parts of the policy language: the node's resolvers, loopback lock-out,
the built-in loader, and how they reach the kernel tables."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
import yaml

from pycontain.core import builtins
from pycontain.core.errors import PolicyError
from pycontain.core.kernel_rules import compile_policy, net_verdict
from pycontain.core.policy import builtin_policy, load_policy_text, policy_to_dict
from pycontain.core.resolve import NAMESERVERS, Resolver, hosts_in_policy, parse_resolv_conf


def test_nameservers_rule_is_resolved_from_resolv_conf_and_reaches_the_allow_trie():
    p = load_policy_text("network:\n  default: deny\n  allow:\n    - {nameservers: true, ports: [53]}\n")
    assert hosts_in_policy(p) == [NAMESERVERS]
    conf = "# generated\nnameserver 198.51.100.53\nnameserver fe80::1%eth0\nnameserver bogus\nsearch x\n"
    r = Resolver(hosts_in_policy(p), lookup=lambda h: [], nameservers=lambda: parse_resolv_conf(conf))
    assert r.refresh(0.0) is True
    assert r.addresses[NAMESERVERS] == ["198.51.100.53", "fe80::1"]
    t = compile_policy(p, r.addresses)
    assert any(net == ipaddress.ip_network("198.51.100.53/32") for net, _rid in t.allow4)
    assert net_verdict(t, protocol="udp", daddr="198.51.100.53", dport=53) == 0
    assert t.rules[net_verdict(t, protocol="udp", daddr="198.51.100.54", dport=53)] == "network.default"


def test_nameservers_round_trips_through_show():
    p = load_policy_text("network:\n  allow:\n    - {nameservers: true, hosts: [pypi.org], ports: [53, 443]}\n")
    d = policy_to_dict(p)
    assert d["network"]["allow"][0]["nameservers"] is True and d["network"]["allow"][0]["hosts"] == ["pypi.org"]
    assert load_policy_text(yaml.safe_dump(d)) == dataclasses.replace(p, source="<string>")


def test_nameservers_must_be_a_bool():
    with pytest.raises(PolicyError) as e:
        load_policy_text("network:\n  allow:\n    - {nameservers: yes please}\n")
    assert e.value.line == 3 and e.value.key == "network.allow[0].nameservers"


@pytest.mark.parametrize("cidr", ["127.0.0.0/8", "127.0.0.1/32", "0.0.0.0/0", "::1/128", "::/0"])
def test_denying_all_of_loopback_is_a_lock_out(cidr):
    with pytest.raises(PolicyError) as e:
        load_policy_text(f"network:\n  deny:\n    - {{cidr: \"{cidr}\"}}\n")
    assert e.value.line == 3 and e.value.key == "network.deny[0]" and "loopback" in e.value.problem
    assert e.value.hint and "ports" in e.value.hint


def test_port_scoped_loopback_deny_is_allowed():
    p = load_policy_text("network:\n  deny:\n    - {cidr: 127.0.0.0/8, ports: [6379]}\n")
    assert p.network.deny[0].ports == ((6379, 6379),)


def test_builtin_loader_by_name():
    assert builtins.names() == ("default", "strict")
    assert builtin_policy("strict") == load_policy_text(builtins.text("strict"), "<builtin:strict>")
    assert "name: default" in builtins.text("default")
    with pytest.raises(PolicyError, match="no built-in policy 'nope'"):
        builtin_policy("nope")


def test_strict_is_at_least_as_strict_as_default_on_exec():
    d, s = builtin_policy("default").exec, builtin_policy("strict").exec
    assert set(d.deny) <= set(s.deny) and set(d.deny_args) <= set(s.deny_args)
    assert set(d.deny_program_args) <= set(s.deny_program_args)


def test_address_less_allow_under_default_deny_is_an_error():
    with pytest.raises(PolicyError) as e:
        load_policy_text("network:\n  default: deny\n  allow:\n    - {cidr: 127.0.0.0/8}\n    - {ports: [443]}\n")
    assert e.value.line == 5 and e.value.key == "network.allow[1]" and "0.0.0.0/0" in e.value.hint
    p = load_policy_text("network:\n  default: deny\n  allow:\n    - {cidrs: [0.0.0.0/0, '::/0'], ports: [443]}\n")
    t = compile_policy(p)
    # issue 12: the port limit is enforced in the kernel (address+port rule table)
    assert net_verdict(t, daddr="198.51.100.1", dport=22) == 1
    assert net_verdict(t, daddr="198.51.100.1", dport=443) == 0
    from pycontain.core.engine import Engine
    assert Engine(p).user_net_rule("198.51.100.1", 22, "tcp")[0] == "network.default"   # user space the port
    assert Engine(p).user_net_rule("198.51.100.1", 443, "tcp") is None


@pytest.mark.parametrize("conf", [
    "nameserver 10.0.0.2\n",                                   # a VPC resolver on a private address
    "options edns0\nnameserver 172.16.0.10\nnameserver fd00::53\n",
    "nameserver 169.254.169.254\n",                            # GCP's metadata server answers DNS
])
def test_strict_keeps_a_private_resolver_from_resolv_conf_reachable(conf):
    """issue 12: under strict, deny_internal/deny_metadata must not beat the
    nameservers allow; only DNS to the resolvers passes, nothing else there."""
    p = builtin_policy("strict")
    r = Resolver(hosts_in_policy(p), lookup=lambda h: [], nameservers=lambda: parse_resolv_conf(conf))
    r.refresh(0.0)
    servers = r.addresses[NAMESERVERS]
    assert servers and all(ipaddress.ip_address(s).is_private for s in servers)
    t = compile_policy(p, r.addresses)
    for s in servers:
        assert net_verdict(t, s, 53, "udp") == 0 and net_verdict(t, s, 53, "tcp") == 0, s
        assert t.rules[net_verdict(t, s, 443, "tcp")] in ("network.deny_internal", "network.deny_metadata"), s
    neighbour = str(ipaddress.ip_address(servers[0]) + 1)
    assert t.rules[net_verdict(t, neighbour, 53, "udp")] in ("network.deny_internal", "network.deny_metadata")
