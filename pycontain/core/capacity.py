"""How much the kernel maps hold, and whether a policy fits (pure).

A policy whose tables do not fit a kernel map fails while the maps are
written ("Argument list too long", "No space left on device"), which is too
late: `policy check` must refuse it, with the rule that overflows and the
limit. MAP_CAPACITY mirrors the ``max_entries`` of the maps in ebpf/ (each a
``#define`` there; kernel/abi.py lists them, and tests/unit/test_layout.py
compares both sides).

Host names are resolved at run time, so their addresses are counted when the
daemon writes the maps (kernel/loader.py checks the live map sizes again
before writing anything).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import MAX_PATTERNS

if TYPE_CHECKING:
    from .kernel_rules import KernelTables

EXEC_NAMES_MAX = 1024    # PC_EXEC_NAMES_MAX, ebpf/exec.c: pc_exec_names
LPM_MAX = 16384          # PC_LPM_MAX, ebpf/connect.c: each of pc_deny4/allow4/deny6/allow6
AGENTS_MAX = 4096        # PC_AGENTS_MAX, ebpf/common.bpf.h: pc_agents (tracked cgroups)
ADDR_RULES = 64          # PC_ADDR_RULES, ebpf/net.bpf.h: address+port rules (bits of a u64 mask)
DFA_BYTES_MAX = 127      # PC_DFA_CLASSES - 1: distinct (case-folded) bytes in all exec patterns

MAP_CAPACITY: dict[str, int] = {
    "pc_exec_names": EXEC_NAMES_MAX,
    "pc_exec_patterns": MAX_PATTERNS,
    "pc_deny4": LPM_MAX,
    "pc_allow4": LPM_MAX,
    "pc_deny6": LPM_MAX,
    "pc_allow6": LPM_MAX,
    "pc_agents": AGENTS_MAX,
}

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True)
class Overflow:
    """A kernel map the tables do not fit: the rule whose entry is the first
    one past the limit (a rule name such as ``exec.deny[1024]``)."""

    map: str
    limit: int
    needed: int
    rule: str
    entry: str = ""       # the entry past the limit (a CIDR), when a rule has several
    place: str = ""       # where the rule is in the policy (exec.deny[1024]); rule ids may be shared

    @property
    def hint(self) -> str:
        if self.map.startswith("pc_exec"):
            return "move rare names to a path glob or a *substring* glob, or split the agents over two policies"
        return "merge addresses into wider CIDRs (e.g. /24s), or split the agents over two policies"

    def message(self) -> str:
        return (f"the kernel map {self.map} holds at most {self.limit} entries; "
                f"this policy needs {self.needed} (this rule is the first that does not fit)")


def _net_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, bytes]:
    """(trie family, prefix length, address): IPv4-mapped IPv6 networks go to
    the IPv4 trie, as kernel/net_maps.py writes them."""
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_V4_MAPPED):
        return 4, net.prefixlen - 96, net.network_address.packed[12:]
    return net.version, net.prefixlen, net.network_address.packed


def _trie_overflows(name: str, family: int, entries: Iterable[tuple[object, int]],
                    rules: dict[int, str], places: dict[int, str]) -> list[Overflow]:
    seen: dict[tuple[int, bytes], int] = {}
    first_over: tuple[int, str] | None = None
    for net, rid in entries:
        fam, plen, addr = _net_key(ipaddress.ip_network(str(net), strict=False))
        if fam != family or (plen, addr) in seen:
            continue
        seen[(plen, addr)] = rid
        if len(seen) == LPM_MAX + 1:
            first_over = (rid, str(net))
    if first_over is None:
        return []
    return [Overflow(name, LPM_MAX, len(seen), rules.get(first_over[0], "network"), first_over[1],
                     places.get(first_over[0], ""))]


def table_overflows(tables: KernelTables) -> list[Overflow]:
    """Every kernel map that ``tables`` (a core.kernel_rules.KernelTables)
    would not fit."""
    out: list[Overflow] = []

    def over(m: str, limit: int, needed: int, rid: int, default: str) -> Overflow:
        return Overflow(m, limit, needed, tables.rules.get(rid, default), place=tables.places.get(rid, ""))
    names = list(tables.exec_names.items())
    if len(names) > EXEC_NAMES_MAX:
        out.append(over("pc_exec_names", EXEC_NAMES_MAX, len(names), names[EXEC_NAMES_MAX][1], "exec.deny"))
    if len(tables.addr_rules) > ADDR_RULES:
        out.append(over("pc_addr_rules", ADDR_RULES, len(tables.addr_rules), tables.addr_rules[ADDR_RULES].rule,
                        "network"))
    if len(tables.exec_patterns) > MAX_PATTERNS:
        out.append(over("pc_exec_patterns", MAX_PATTERNS, len(tables.exec_patterns),
                        tables.exec_patterns[MAX_PATTERNS][2], "exec.deny"))
    seen_bytes: set[int] = set()
    for pat, _where, rid in tables.exec_patterns:
        seen_bytes |= set(pat.lower().encode("utf-8", "surrogateescape"))
        if len(seen_bytes) > DFA_BYTES_MAX:
            out.append(over("pc_exec_dfa_class", DFA_BYTES_MAX, len(seen_bytes), rid, "exec"))
            break
    for name, family, entries in (
            ("pc_deny4", 4, list(tables.deny4) + list(tables.deny6)),
            ("pc_allow4", 4, list(tables.allow4) + list(tables.allow6)),
            ("pc_deny6", 6, tables.deny6), ("pc_allow6", 6, tables.allow6)):
        out += _trie_overflows(name, family, entries, tables.rules, tables.places)
    return out
