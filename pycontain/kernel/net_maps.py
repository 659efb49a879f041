"""KernelTables → the network maps of ebpf/connect.c and net.bpf.h (thin BCC edge + pure conversion).

Maps written here (declared in ebpf/connect.c; pc_net_rules in ebpf/net.bpf.h):

* ``pc_ports``  array[65536] of struct pc_port_rule, indexed by destination port;
* ``pc_deny4`` / ``pc_allow4`` LPM tries of struct pc_lpm4 → rule id;
* ``pc_deny6`` / ``pc_allow6`` LPM tries of struct pc_lpm6 → rule id;
* ``pc_net_rules`` array[4]: rule ids for verdicts no table entry names
  (default deny, stratum, raw socket, packet socket).

``pc_config`` (mode, flags) is written by the loader.

Rule ids for those four verdicts are looked up by name in
``KernelTables.rules``; the policy compiler should name them
``network.default``, ``network.stratum``, ``network.raw_socket`` and
``network.packet_socket``. When a name is missing, the reserved id in
RESERVED_RULE_IDS is used, unless another rule holds that id (then 0, "no
rule": the kernel still enforces, only the label is missing).

Updates never open a gap: new entries are written before stale ones are
removed, and the port array is rewritten in one batch where the kernel allows.

IPv4-mapped IPv6 networks (``::ffff:0:0/96`` and longer) are moved to the
IPv4 tries: the kernel judges mapped destinations by the IPv4 tables.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..core.kernel_rules import KernelTables

log = logging.getLogger(__name__)

DEFAULT_DENY_RULE_ID = 1
STRATUM_RULE_ID = 2
RAW_SOCKET_RULE_ID = 3
PACKET_SOCKET_RULE_ID = 4

# slot in pc_net_rules -> (rule name, reserved id); slots are PC_NR_* of ebpf/net.bpf.h
# (the layout test compares them: kernel/abi.py)
RULE_SLOTS: tuple[tuple[str, int], ...] = (
    ("network.default", DEFAULT_DENY_RULE_ID),
    ("network.stratum", STRATUM_RULE_ID),
    ("network.raw_socket", RAW_SOCKET_RULE_ID),
    ("network.packet_socket", PACKET_SOCKET_RULE_ID),
)
RESERVED_RULE_IDS: dict[str, int] = dict(RULE_SLOTS)

PORTS = 65536
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True)
class LpmEntry:
    prefixlen: int
    addr: bytes      # network byte order, 4 or 16 bytes
    rule: int


def lpm_entry(net: ipaddress.IPv4Network | ipaddress.IPv6Network, rule: int) -> LpmEntry:
    """One trie entry: prefix length and the network address bytes (host bits zero)."""
    net = ipaddress.ip_network(net, strict=False)
    return LpmEntry(net.prefixlen, net.network_address.packed, int(rule))


def split_mapped(nets6: Iterable[tuple[ipaddress.IPv6Network, int]]) -> tuple[list, list]:
    """(IPv4 networks from IPv4-mapped IPv6 entries, the remaining IPv6 entries)."""
    v4, v6 = [], []
    for entry, rule in nets6:
        net = ipaddress.IPv6Network(entry, strict=False)
        if net.prefixlen >= 96 and net.subnet_of(_V4_MAPPED):
            addr = ipaddress.IPv4Address(net.network_address.packed[12:])
            v4.append((ipaddress.IPv4Network((addr, net.prefixlen - 96)), rule))
        else:
            v6.append((net, rule))
    return v4, v6


def trie_entries(nets: Iterable[tuple[Any, int]]) -> dict[tuple[int, bytes], int]:
    """{(prefixlen, addr): rule}; when one network is listed twice the first
    (lowest index, i.e. earliest in the policy) rule id is kept."""
    out: dict[tuple[int, bytes], int] = {}
    for net, rule in nets:
        if not rule:
            raise ValueError(f"rule id 0 for {net}: 0 means 'no rule'")
        e = lpm_entry(net, rule)
        out.setdefault((e.prefixlen, e.addr), e.rule)
    return out


def net_trie_contents(tables: KernelTables) -> dict[str, dict[tuple[int, bytes], int]]:
    """The contents of the four tries, IPv4-mapped IPv6 entries moved to IPv4."""
    deny_m4, deny6 = split_mapped(tables.deny6)
    allow_m4, allow6 = split_mapped(tables.allow6)
    return {
        "pc_deny4": trie_entries(list(tables.deny4) + deny_m4),
        "pc_allow4": trie_entries(list(tables.allow4) + allow_m4),
        "pc_deny6": trie_entries(deny6),
        "pc_allow6": trie_entries(allow6),
    }


def port_rows(ports: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Validated {port: (tcp rule, udp rule)} without all-zero rows."""
    out = {}
    for port, (tcp, udp) in ports.items():
        if not 0 <= int(port) < PORTS:
            raise ValueError(f"port {port} out of range 0..65535")
        if tcp or udp:
            out[int(port)] = (int(tcp), int(udp))
    return out


def rule_slot_ids(rules: dict[int, str]) -> list[int]:
    """Rule ids for the pc_net_rules slots, by name in `rules`, else the reserved id if free."""
    by_name: dict[str, int] = {}
    for rid, name in sorted(rules.items()):
        by_name.setdefault(name, rid)
    out = []
    for name, reserved in RULE_SLOTS:
        found = by_name.get(name)
        if found is not None:
            out.append(found)
            continue
        taken = rules.get(reserved)
        if taken is not None and taken != name:
            log.warning("rule id %d is %r, not %r: kernel %s verdicts carry rule 0",
                        reserved, taken, name, name)
            out.append(0)
        else:
            out.append(reserved)
    return out


# ---- the BCC edge ----------------------------------------------------------------

def write_net_tables(bpf, tables: KernelTables) -> None:
    """Make the network maps hold exactly `tables` (add first, then prune)."""
    slots = rule_slot_ids(tables.rules)
    t = bpf[b"pc_net_rules"]
    for i, rid in enumerate(slots):
        t[ctypes.c_int(i)] = ctypes.c_uint32(rid)
    _write_ports(bpf, port_rows(tables.ports))
    for name, want in net_trie_contents(tables).items():
        _write_trie(bpf[name.encode()], want)


def _write_trie(table, want: dict[tuple[int, bytes], int]) -> None:
    for (plen, addr), rule in want.items():
        table[_lpm_key(table, plen, addr)] = ctypes.c_uint32(rule)
    for k in list(table.keys()):
        if (int(k.prefixlen), bytes(k.addr)) not in want:
            try:
                del table[k]
            except KeyError:
                pass


def _lpm_key(table, plen: int, addr: bytes):
    k = table.Key()
    k.prefixlen = plen
    ctypes.memmove(ctypes.addressof(k.addr), addr, len(addr))
    return k


_WRITTEN = "_pc_ports_written"   # attribute on the BPF object: ports set by the last call


def _write_ports(bpf, rows: dict[int, tuple[int, int]]) -> None:
    """A fresh pc_ports is all zeros, so only ports written before need clearing."""
    table = bpf[b"pc_ports"]
    stale = set(getattr(bpf, _WRITTEN, ())) - set(rows)
    if stale or rows:
        entries = [(p, rows[p]) for p in sorted(rows)] + [(p, (0, 0)) for p in sorted(stale)]
        _bulk_ports(table, entries)
    setattr(bpf, _WRITTEN, frozenset(rows))


def _bulk_ports(table, entries: list[tuple[int, tuple[int, int]]]) -> None:
    n = len(entries)
    keys = (table.Key * n)()
    vals = (table.Leaf * n)()
    for i, (port, (tcp, udp)) in enumerate(entries):
        keys[i] = table.Key(port)
        vals[i].tcp_rule = tcp
        vals[i].udp_rule = udp
    try:
        table.items_update_batch(keys, vals)
        return
    except Exception:   # older kernels: no batch ops on arrays
        pass
    for i in range(n):
        table[keys[i]] = vals[i]
