"""Pure parts of the network map writer: networks → LPM keys, mapped IPv6,
port rows, reserved rule ids, and agreement with the C side."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycontain.core.kernel_rules import KernelTables
from pycontain.kernel import net_maps
from pycontain.kernel.net_maps import (
    DEFAULT_DENY_RULE_ID,
    RULE_SLOTS,
    lpm_entry,
    net_trie_contents,
    port_rows,
    rule_slot_ids,
    split_mapped,
    trie_entries,
)

REPO = Path(__file__).resolve().parents[2]
N = ipaddress.ip_network


def test_lpm_entry_is_prefix_length_and_network_bytes():
    e = lpm_entry(N("198.51.100.0/24"), 7)
    assert (e.prefixlen, e.addr, e.rule) == (24, bytes([198, 51, 100, 0]), 7)
    e6 = lpm_entry(N("2001:db8::/32"), 9)
    assert e6.prefixlen == 32 and e6.addr == bytes.fromhex("20010db8") + bytes(12)
    assert lpm_entry(N("10.1.2.3/32"), 1).addr == bytes([10, 1, 2, 3])


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_lpm_entry_zeroes_host_bits(addr, plen):
    net = ipaddress.IPv4Network((addr, plen), strict=False)
    e = lpm_entry(net, 1)
    assert int.from_bytes(e.addr, "big") & ((1 << (32 - plen)) - 1) == 0
    assert ipaddress.IPv4Address(addr) in ipaddress.IPv4Network((e.addr, e.prefixlen))


def test_ipv4_mapped_ipv6_networks_move_to_the_ipv4_tries():
    v4, v6 = split_mapped([(N("::ffff:198.51.100.0/120"), 3), (N("2001:db8::/32"), 4),
                           (N("::ffff:0:0/96"), 5), (N("::/0"), 6)])
    assert v4 == [(N("198.51.100.0/24"), 3), (N("0.0.0.0/0"), 5)]
    assert v6 == [(N("2001:db8::/32"), 4), (N("::/0"), 6)]   # only networks inside ::ffff:0:0/96 move


def test_trie_contents_from_tables():
    t = KernelTables(deny4=[(N("10.0.0.0/8"), 2)], deny6=[(N("::ffff:10.0.0.0/104"), 3), (N("fd00::/8"), 4)],
                     allow4=[(N("198.51.100.0/24"), 5)], allow6=[(N("2001:db8::/32"), 6)])
    c = net_trie_contents(t)
    assert c["pc_deny4"] == {(8, bytes([10, 0, 0, 0])): 2}      # first rule wins for a duplicate network
    assert c["pc_deny6"] == {(8, bytes([0xFD]) + bytes(15)): 4}
    assert c["pc_allow4"] == {(24, bytes([198, 51, 100, 0])): 5}
    assert c["pc_allow6"] == {(32, bytes.fromhex("20010db8") + bytes(12)): 6}


def test_rule_id_zero_is_refused_for_a_trie_entry():
    with pytest.raises(ValueError):
        trie_entries([(N("10.0.0.0/8"), 0)])


def test_port_rows_validate_and_drop_empty_rows():
    assert port_rows({3333: (1, 0), 53: (0, 2), 80: (0, 0)}) == {3333: (1, 0), 53: (0, 2)}
    for bad in (-1, 65536):
        with pytest.raises(ValueError):
            port_rows({bad: (1, 1)})


def test_reserved_rule_ids_by_name_else_reserved_else_zero():
    assert rule_slot_ids({}) == [1, 2, 3, 4]
    assert rule_slot_ids({7: "network.default", 9: "network.stratum"}) == [7, 9, 3, 4]
    # id 1 is taken by another rule and "network.default" is missing: no label rather than a wrong one
    assert rule_slot_ids({1: "exec.deny[0]", 2: "network.stratum"})[:2] == [0, 2]
    assert DEFAULT_DENY_RULE_ID == rule_slot_ids({})[0]


def test_rule_slots_agree_with_connect_c():
    # PC_NR_* live in net.bpf.h (shared with socket.c, stratum.c), pc_ports in connect.c
    src = (REPO / "ebpf" / "net.bpf.h").read_text() + (REPO / "ebpf" / "connect.c").read_text()
    slots = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define PC_NR_(\w+) (\d+)", src)}
    names = {"DEFAULT": "network.default", "STRATUM": "network.stratum", "RAW": "network.raw_socket",
             "PACKET": "network.packet_socket"}
    assert slots.pop("SLOTS") == len(RULE_SLOTS)
    for macro, slot in slots.items():
        assert RULE_SLOTS[slot][0] == names[macro]
    assert re.search(rf"BPF_ARRAY\(pc_ports, struct pc_port_rule, {net_maps.PORTS:d}\)", src)
