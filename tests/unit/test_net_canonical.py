"""Issue 12: canonical destinations, address+port rules and the resolvers'
pass, as the kernel judges them (kernel_rules.net_verdict emulates
pc_net_judge; net_maps builds its masks)."""

from __future__ import annotations

import ipaddress

import pytest

from pycontain.core.errors import PolicyError
from pycontain.core.kernel_rules import AddrRule, KernelTables, canonical_destinations, compile_policy, net_verdict
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.core.resolve import NAMESERVERS
from pycontain.kernel.net_maps import addr_rule_masks, port_masks, rule_masks


@pytest.mark.parametrize("alias", ["127.0.0.2", "127.1.2.3", "0.0.0.0", "::ffff:127.0.0.1", "::1", "::",
                                   "::ffff:0.0.0.0"])
def test_loopback_aliases_meet_a_loopback_rule(alias):
    t = KernelTables(rules={9: "network.deny[0]"}, deny4=[(ipaddress.ip_network("127.0.0.1/32"), 9)])
    assert net_verdict(t, alias, 8080) == 9
    assert net_verdict(t, "198.51.100.1", 8080) == 0


def test_v4_compatible_and_mapped_are_judged_as_ipv4():
    t = KernelTables(rules={9: "network.deny[0]"}, deny4=[(ipaddress.ip_network("198.51.100.0/24"), 9)])
    assert net_verdict(t, "::198.51.100.7", 443) == 9
    assert net_verdict(t, "::ffff:198.51.100.7", 443) == 9
    assert canonical_destinations("::ffff:198.51.100.7") == ([ipaddress.ip_address("198.51.100.7")], False)


def test_packet_through_lo_is_loopback_whatever_its_address():
    t = KernelTables(rules={9: "network.deny[0]"}, deny6=[(ipaddress.ip_network("::1/128"), 9)])
    assert net_verdict(t, "192.0.2.10", 22, via_lo=True) == 9
    assert net_verdict(t, "192.0.2.10", 22) == 0


def test_address_port_deny_compiles_to_the_kernel_table():
    p = load_policy_text("network:\n  deny:\n    - {cidr: 198.51.100.0/24, ports: [22], protocol: tcp}\n")
    t = compile_policy(p)
    rid = next(r for r, n in t.rules.items() if n == "network.deny:198.51.100.0/24 tcp/22")
    assert net_verdict(t, "198.51.100.9", 22, "tcp") == rid
    assert net_verdict(t, "198.51.100.9", 22, "udp") == 0
    assert net_verdict(t, "198.51.100.9", 443, "tcp") == 0
    assert net_verdict(t, "203.0.113.9", 22, "tcp") == 0


def test_default_deny_denies_protocols_the_policy_does_not_name():
    p = load_policy_text("network:\n  default: deny\n  allow:\n    - {cidr: 198.51.100.0/24, ports: [443]}\n"
                         "    - {cidr: 203.0.113.0/24}\n")
    t = compile_policy(p)
    assert net_verdict(t, "198.51.100.9", 443, "tcp") == 0
    assert net_verdict(t, "198.51.100.9", 0, "1") == 1          # ICMP to a port-limited allow: denied
    assert net_verdict(t, "203.0.113.9", 0, "1") == 0           # an address-only allow covers every protocol


def test_strict_keeps_the_nodes_resolvers_reachable_even_on_internal_addresses():
    t = compile_policy(builtin_policy("strict"), {NAMESERVERS: ["10.0.0.2", "fd00::53"]})
    assert net_verdict(t, "10.0.0.2", 53, "udp") == 0
    assert net_verdict(t, "10.0.0.2", 53, "tcp") == 0
    assert net_verdict(t, "fd00::53", 53, "udp") == 0
    internal = next(r for r, n in t.rules.items() if n == "network.deny_internal")
    assert net_verdict(t, "10.0.0.2", 80, "tcp") == internal    # only DNS passes
    assert net_verdict(t, "10.0.0.3", 53, "udp") == internal    # only the resolvers
    assert net_verdict(t, "127.0.0.53", 53, "udp") == 0


def test_explicit_deny_beats_the_resolvers_pass():
    p = load_policy_text("network:\n  deny_internal: true\n  deny:\n    - {cidr: 10.0.0.2/32}\n"
                         "  allow:\n    - {nameservers: true, ports: [53]}\n")
    t = compile_policy(p, {NAMESERVERS: ["10.0.0.2"]})
    assert net_verdict(t, "10.0.0.2", 53, "udp") == \
        next(r for r, n in t.rules.items() if n == "network.deny:10.0.0.2/32")


def test_masks_carry_every_rule_covering_an_address():
    a = AddrRule("deny", 10, "tcp", ((22, 22),), (ipaddress.ip_network("10.0.0.0/8"),))
    b = AddrRule("allow", 11, "any", (), (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("::ffff:0:0/96")))
    m4, m6 = addr_rule_masks([a, b])
    assert m4[(0, bytes(4))] == 0b10                           # the mapped range became IPv4 0.0.0.0/0
    assert m4[(8, bytes([10, 0, 0, 0]))] == 0b11               # ... which encloses the /8
    assert m4[(16, bytes([10, 1, 0, 0]))] == 0b11              # the /16 inherits every enclosing rule
    c = AddrRule("deny", 12, "any", (), (ipaddress.ip_network("10.2.0.0/16"),))
    m4, _ = addr_rule_masks([a, c])
    assert (m4[(8, bytes([10, 0, 0, 0]))], m4[(16, bytes([10, 2, 0, 0]))]) == (0b01, 0b11)
    assert m6 == {}
    assert port_masks([a, b]) == {22: (1, 0)}
    m = rule_masks([a, b])
    assert (m.any, m.deny, m.allow, m.passes) == (0b10, 0b01, 0b10, 0)


def test_too_many_address_rules_is_a_policy_error():
    """Capacity is validation: the 65th address rule is refused when the
    policy is loaded, on its own line, with the limit."""
    rules = "".join(f"    - {{cidr: 198.51.100.{i}/32, ports: [22]}}\n" for i in range(65))
    with pytest.raises(PolicyError) as e:
        load_policy_text("network:\n  deny:\n" + rules, "p.yaml")
    assert e.value.line == 3 + 64 and "pc_addr_rules holds at most 64" in e.value.message


def test_a_dropped_packet_is_a_network_violation_and_kills_nobody():
    from pycontain.core.decisions import Action
    from pycontain.core.engine import Engine
    from pycontain.core.events import EventType, Flag, Header, NetEvent, Verdict

    p = load_policy_text("network:\n  deny:\n    - {cidr: 198.51.100.0/24}\n")
    e = Engine(p)
    e.add_agent(7, "trainer")
    rid = net_verdict(compile_policy(p), "198.51.100.1", 0, "1")
    h = Header(type=EventType.PACKET, verdict=Verdict.DENY, flags=Flag(0), rule_id=rid, pid=0, tid=0, ppid=0,
               uid=0, agent_id=7, ts_ns=5, start_ns=0, cgroup_id=1, comm=b"")
    ds = e.on_event(NetEvent(h=h, family=2, protocol=1, daddr="198.51.100.1", dport=0, saddr="", sport=0), 1.0)
    assert [(d.action, d.rule) for d in ds] == [(Action.DENY, "network.deny:198.51.100.0/24")]
