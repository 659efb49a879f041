"""Issue 12 policy keys: network.inbound, network.scan, network.ssh, exec.stdio_socket,
and what they compile to for the kernel."""

from __future__ import annotations

import ipaddress

import pytest

from pycontain.core.errors import PolicyError
from pycontain.core.events import ConfigFlag
from pycontain.core.kernel_rules import compile_policy
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.core.resolve import hosts_in_policy


def test_defaults_scan_ssh_inbound_and_reverse_shells_on():
    t = compile_policy(builtin_policy("default"))
    for f in (ConfigFlag.SCAN, ConfigFlag.SSH, ConfigFlag.INBOUND_LOOPBACK, ConfigFlag.STDIO_SOCKET):
        assert t.flags & f
    assert not t.flags & ConfigFlag.INBOUND_DENY
    assert t.scan_limits == (256, 64, 60 * 10**9)
    names = set(t.rules.values())
    assert {"network.scan", "network.ssh", "network.inbound", "exec.stdio_socket"} <= names
    assert t.ssh_allow4 == [] and t.ssh_allow6 == []


def test_keys_compile():
    p = load_policy_text("""
network:
  inbound: deny
  scan: {max_hosts: 10, max_ports: 5, window: 2m}
  ssh:
    allow: [{cidr: 140.82.112.0/20}, {host: github.com}, {cidr: '2001:db8::/32'}]
exec:
  stdio_socket: "off"
""")
    t = compile_policy(p, {"github.com": ["140.82.121.4"]})
    assert t.flags & ConfigFlag.INBOUND_DENY and not t.flags & ConfigFlag.INBOUND_LOOPBACK
    assert not t.flags & ConfigFlag.STDIO_SOCKET
    assert t.scan_limits == (10, 5, 120 * 10**9)
    assert [str(n) for n, _ in t.ssh_allow4] == ["140.82.112.0/20", "140.82.121.4/32"]
    assert [str(n) for n, _ in t.ssh_allow6] == ["2001:db8::/32"]
    assert "github.com" in hosts_in_policy(p)


def test_scan_off_and_inbound_allow():
    t = compile_policy(load_policy_text("network: {scan: false, inbound: allow}"))
    assert not t.flags & (ConfigFlag.SCAN | ConfigFlag.INBOUND_LOOPBACK | ConfigFlag.INBOUND_DENY)
    assert t.scan_limits == (0, 0, 0)


@pytest.mark.parametrize("text,words", [
    ("network: {inbound: sometimes}", "inbound"),
    ("network: {scan: {max_ports: 0}}", "max_ports"),
    ("network: {scan: {window: 0s}}", "window"),
    ("network: {ssh: {allow: [{cidr: nope}]}}", "CIDR"),
    ("network: {ssh: {deny: []}}", "deny"),
])
def test_bad_values_are_one_error_line(text, words):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    assert "p.yaml:1" in str(e.value) and words in str(e.value)


def test_ipv4_mapped_ssh_entries_go_to_the_v4_trie():
    from pycontain.kernel.net_maps import split_mapped
    m4, v6 = split_mapped([(ipaddress.ip_network("::ffff:198.51.100.0/120"), 1)])
    assert [str(n) for n, _ in m4] == ["198.51.100.0/24"] and v6 == []
