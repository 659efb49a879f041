"""KernelTables → the network maps of ebpf/connect.c and net.bpf.h (thin BCC edge + pure conversion).

Maps written here (declared in ebpf/connect.c; pc_net_rules in ebpf/net.bpf.h):

* ``pc_ports``  array[65536] of struct pc_port_rule, indexed by destination port;
* ``pc_deny4`` / ``pc_allow4`` LPM tries of struct pc_lpm4 → rule id;
* ``pc_deny6`` / ``pc_allow6`` LPM tries of struct pc_lpm6 → rule id;
* ``pc_net_rules`` array[4]: rule ids for verdicts no table entry names
  (default deny, stratum, raw socket, packet socket);
* ``pc_named_rules`` array[8]: more such rule ids, by name (NAMED_SLOTS:
  deny_internal and deny_metadata, which a nameservers ``pass`` rule beats,
  and source_route);
* address+port rules (issue 12), as masks over at most 64 rules:
  ``pc_rules4`` / ``pc_rules6`` LPM tries of prefix → rules whose networks
  contain it; ``pc_port_masks`` array[65536] port → rules covering it (tcp,
  udp); ``pc_rule_masks`` (rules without ports, and the kind of each rule);
  ``pc_addr_rule_ids`` bit → rule id.

``pc_config`` (mode, flags) is written by the loader. ``pc_net_gen``
(ebpf/egress.c) is bumped after every write: the allowed verdicts egress.c
keeps on sockets are judged again under the new tables.

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

from ..core.capacity import ADDR_RULES
from ..core.kernel_rules import AddrRule, KernelTables, limited_allow_ids

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

# slot in pc_named_rules -> rule name (PC_NX_* of ebpf/net.bpf.h; kernel/abi.py compares them)
NAMED_SLOTS: tuple[str, ...] = ("network.deny_internal", "network.deny_metadata", "network.source_route",
                                 "network.scan", "network.ssh", "network.inbound", "exec.stdio_socket",
                                 "network.socket_family")
NAMED_SLOT_COUNT = 8

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
    limited = limited_allow_ids(tables)
    deny_m4, deny6 = split_mapped(tables.deny6)
    allow_m4, allow6 = split_mapped([e for e in tables.allow6 if e[1] not in limited])
    return {
        "pc_deny4": trie_entries(list(tables.deny4) + deny_m4),
        "pc_allow4": trie_entries([e for e in tables.allow4 if e[1] not in limited] + allow_m4),
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


def named_slot_ids(rules: dict[int, str]) -> list[int]:
    """Rule ids for the pc_named_rules slots, by name in `rules` (0 when absent)."""
    by_name: dict[str, int] = {}
    for rid, name in sorted(rules.items()):
        by_name.setdefault(name, rid)
    return [by_name.get(name, 0) for name in NAMED_SLOTS] + [0] * (NAMED_SLOT_COUNT - len(NAMED_SLOTS))


def _rule_nets(r: AddrRule) -> tuple[list, list]:
    """(IPv4 networks, IPv6 networks) of a rule, IPv4-mapped IPv6 ones as IPv4."""
    v4 = [n for n in r.nets if n.version == 4]
    m4, v6 = split_mapped([(n, 1) for n in r.nets if n.version == 6])
    return v4 + [n for n, _ in m4], [n for n, _ in v6]


def addr_rule_masks(rules: list[AddrRule]) -> tuple[dict[tuple[int, bytes], int], dict[tuple[int, bytes], int]]:
    """pc_rules4 / pc_rules6 contents: each prefix any rule names -> the mask
    of every rule whose networks contain that prefix, so the kernel's longest
    match carries all rules covering an address."""
    if len(rules) > ADDR_RULES:
        raise ValueError(f"{len(rules)} address rules: the kernel holds {ADDR_RULES}")
    out: list[dict[tuple[int, bytes], int]] = []
    for fam in (0, 1):
        nets = [(i, n) for i, r in enumerate(rules) for n in _rule_nets(r)[fam]]
        masks: dict[tuple[int, bytes], int] = {}
        for _i, p in nets:
            key = (p.prefixlen, p.network_address.packed)
            if key not in masks:
                masks[key] = sum(1 << j for j in {j for j, n in nets if p.subnet_of(n)})
        out.append(masks)
    return out[0], out[1]


@dataclass(frozen=True)
class RuleMasks:
    """struct pc_rule_masks: bit i is addr_rules[i]."""

    any: int = 0
    tcp_all: int = 0
    udp_all: int = 0
    deny: int = 0
    allow: int = 0      # allow and pass
    passes: int = 0     # pass


def rule_masks(rules: list[AddrRule]) -> RuleMasks:
    kw = dict.fromkeys(("any", "tcp_all", "udp_all", "deny", "allow", "passes"), 0)
    for i, r in enumerate(rules):
        bit = 1 << i
        if not r.ports:
            kw[{"any": "any", "tcp": "tcp_all", "udp": "udp_all"}[r.protocol]] |= bit
        kw["deny" if r.kind == "deny" else "allow"] |= bit
        if r.kind == "pass":
            kw["passes"] |= bit
    return RuleMasks(**kw)


def port_masks(rules: list[AddrRule]) -> dict[int, tuple[int, int]]:
    """pc_port_masks rows: port -> (tcp mask, udp mask) of the rules whose ports cover it."""
    out: dict[int, tuple[int, int]] = {}
    for i, r in enumerate(rules):
        for lo, hi in r.ports:
            for port in range(lo, hi + 1):
                tcp, udp = out.get(port, (0, 0))
                out[port] = (tcp | (1 << i) if r.protocol in ("tcp", "any") else tcp,
                             udp | (1 << i) if r.protocol in ("udp", "any") else udp)
    return out


# ---- the BCC edge ----------------------------------------------------------------

def write_net_tables(bpf, tables: KernelTables) -> None:
    """Make the network maps hold exactly `tables` (add first, then prune)."""
    slots = rule_slot_ids(tables.rules)
    t = bpf[b"pc_net_rules"]
    for i, rid in enumerate(slots):
        t[ctypes.c_int(i)] = ctypes.c_uint32(rid)
    named = bpf[b"pc_named_rules"]
    for i, rid in enumerate(named_slot_ids(tables.rules)):
        named[ctypes.c_int(i)] = ctypes.c_uint32(rid)
    _write_ports(bpf, port_rows(tables.ports))
    for name, want in net_trie_contents(tables).items():
        _write_trie(bpf[name.encode()], want)
    _write_addr_rules(bpf, tables.addr_rules)
    _write_issue12(bpf, tables)
    bump_generation(bpf)


def bump_generation(bpf, name: bytes = b"pc_net_gen") -> None:
    """Raise the generation counter `name` (slot 0 of an array), so every
    verdict the kernel cached under an older one is judged again:
    pc_net_gen for the network verdicts (net.bpf.h memo, egress.c's
    pc_sk_infos), pc_exec_gen for the files judged clean (exe.bpf.h).
    Called after the tables (and the config flags, written before them by
    Probes.set_tables) are complete, so a verdict made during the write
    keeps the older generation. For pc_net_gen 0 means "never cached"; it
    starts at 1. A program built without the counter's map: nothing to do."""
    try:
        t = bpf[name]
    except KeyError:
        return
    t[ctypes.c_int(0)] = t.Leaf(int(t[ctypes.c_int(0)].value) + 1)


def _write_issue12(bpf, tables: KernelTables) -> None:
    """Scan limits and the SSH destination tries (ebpf/detect.bpf.h), when compiled in."""
    try:
        lim = bpf[b"pc_scan_limits"]
    except KeyError:   # a program built without connect.c/egress.c
        return
    v = lim.Leaf()
    v.max_hosts, v.max_ports, v.window_ns = tables.scan_limits
    lim[ctypes.c_int(0)] = v
    m4, v6 = split_mapped(tables.ssh_allow6)
    _write_trie(bpf[b"pc_ssh_allow4"], trie_entries(list(tables.ssh_allow4) + m4))
    _write_trie(bpf[b"pc_ssh_allow6"], trie_entries(v6))


def _write_addr_rules(bpf, rules: list[AddrRule]) -> None:
    """Ids, port masks and kinds first, then the address masks that name the
    rules. A rule is only reachable through an address mask, so a packet
    meets either the old masks or the new rules' complete rows; a bit reused
    by another rule in between can give the old address the new rule's
    verdict for one lookup (never a missing row)."""
    ids = bpf[b"pc_addr_rule_ids"]
    for i in range(ADDR_RULES):
        ids[ctypes.c_int(i)] = ctypes.c_uint32(rules[i].rule if i < len(rules) else 0)
    _write_port_masks(bpf, port_masks(rules))
    m = rule_masks(rules)
    table = bpf[b"pc_rule_masks"]
    v = table.Leaf()
    v.any, v.tcp_all, v.udp_all, v.deny, v.allow, v.passes = m.any, m.tcp_all, m.udp_all, m.deny, m.allow, m.passes
    table[ctypes.c_int(0)] = v
    m4, m6 = addr_rule_masks(rules)
    _write_trie(bpf[b"pc_rules4"], m4, ctypes.c_uint64)
    _write_trie(bpf[b"pc_rules6"], m6, ctypes.c_uint64)


_MASKS_WRITTEN = "_pc_port_masks_written"


def _write_port_masks(bpf, rows: dict[int, tuple[int, int]]) -> None:
    table = bpf[b"pc_port_masks"]
    stale = set(getattr(bpf, _MASKS_WRITTEN, ())) - set(rows)
    entries = [(p, rows[p]) for p in sorted(rows)] + [(p, (0, 0)) for p in sorted(stale)]
    if entries:
        n = len(entries)
        keys = (table.Key * n)()
        vals = (table.Leaf * n)()
        for i, (port, (tcp, udp)) in enumerate(entries):
            keys[i] = table.Key(port)
            vals[i].tcp, vals[i].udp = tcp, udp
        _update_batch(table, keys, vals, n)
    setattr(bpf, _MASKS_WRITTEN, frozenset(rows))


def _update_batch(table, keys, vals, n: int) -> None:
    try:
        table.items_update_batch(keys, vals)
        return
    except Exception:   # older kernels: no batch ops on arrays
        pass
    for i in range(n):
        table[keys[i]] = vals[i]


def _write_trie(table, want: dict[tuple[int, bytes], int], leaf=ctypes.c_uint32) -> None:
    for (plen, addr), rule in want.items():
        table[_lpm_key(table, plen, addr)] = leaf(rule)
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
    _update_batch(table, keys, vals, n)
