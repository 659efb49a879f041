"""Every constant Python mirrors from ebpf/, by its C name: the one table.

tests/unit/test_layout.py prints each name with the host C compiler (from
ebpf/pycontain.h, or the ``#define`` line of the ebpf/ source that declares it)
and compares it with the value here, so a constant that drifts on either side
fails a unit test. Mirroring one more constant is one line in C_CONSTANTS; an
enum of pycontain.h is mirrored member by member through its Python enum.
"""

from __future__ import annotations

import enum

from ..core import capacity
from ..core import events as ev
from ..core.capacity import ADDR_RULES
from ..core.cgroup_glob import BIRTH_CLASSES, BIRTH_STATES
from . import exec_dfa as dfa
from .net_maps import NAMED_SLOT_COUNT, NAMED_SLOTS, RULE_SLOTS


def _members(prefix: str, e: type[enum.Enum]) -> dict[str, int]:
    return {prefix + m.name: int(m.value) for m in e}


def _slot(rule: str) -> int:
    """Index in pc_net_rules of the rule `rule` (net_maps.RULE_SLOTS order)."""
    return [name for name, _id in RULE_SLOTS].index(rule)


C_CONSTANTS: dict[str, int] = {
    **_members("PC_EV_", ev.EventType),
    **_members("PC_", ev.Verdict),
    **_members("PC_F_", ev.Flag),
    **_members("PC_MODE_", ev.Mode),
    **_members("PC_CFG_", ev.ConfigFlag),
    **_members("PC_PAT_", ev.PatternWhere),
    "PC_COMM_LEN": ev.COMM_LEN,
    "PC_FILENAME_LEN": ev.FILENAME_LEN,
    "PC_ARGS_LEN": ev.ARGS_LEN,
    "PC_PAYLOAD_LEN": ev.PAYLOAD_LEN,
    "PC_NAME_LEN": ev.NAME_LEN,
    "PC_PATTERN_LEN": ev.PATTERN_LEN,
    "PC_MAX_PATTERNS": ev.MAX_PATTERNS,
    "PC_MAX_LEVELS": ev.MAX_LEVELS,
    "PC_CGPATH_LEN": ev.CGPATH_LEN,
    "PC_UNIX_NAME_LEN": ev.UNIX_NAME_LEN,
    "PC_BIRTH_STATES": BIRTH_STATES,
    "PC_BIRTH_CLASSES": BIRTH_CLASSES,
    "PC_BIRTH_AGENT_BASE": ev.BIRTH_AGENT_BASE,
    "PC_EXE_NAME_LEN": ev.EXE_NAME_LEN,          # issue 11
    "PC_RULE_HOLD": ev.RULE_HOLD,
    "PC_RULE_FILELESS": ev.RULE_FILELESS,
    "PC_RULE_UNTRUSTED": ev.RULE_UNTRUSTED,
    "PC_MAP_CALL_MPROTECT": ev.MAP_CALL_MPROTECT,
    "PC_MAP_CALL_MREMAP": ev.MAP_CALL_MREMAP,
    "PC_MAP_CALL_UNTRACKED": ev.MAP_CALL_UNTRACKED,
    "PC_DFA_STATES": dfa.DFA_STATES,             # ebpf/exec.c
    "PC_DFA_CLASSES": dfa.DFA_CLASSES,
    "PC_DFA_MATCH_SHIFT": dfa.MATCH_SHIFT,
    "PC_CTL_BANK": dfa.CTL_BANK,                 # ebpf/exec.c: pc_exec_dfa_ctl slots
    "PC_CTL_ARGS_ROOT": dfa.CTL_ARGS_ROOT,
    "PC_CTL_BASENAME_COUNT": dfa.CTL_BASENAME_COUNT,
    "PC_CTL_ARGS_COUNT": dfa.CTL_ARGS_COUNT,
    "PC_CTL_HOLD_ARGS_MIN": dfa.CTL_HOLD_ARGS_MIN,
    "PC_NR_DEFAULT": _slot("network.default"),   # ebpf/net.bpf.h: pc_net_rules slots
    "PC_NR_STRATUM": _slot("network.stratum"),
    "PC_NR_RAW": _slot("network.raw_socket"),
    "PC_NR_PACKET": _slot("network.packet_socket"),
    "PC_NR_SLOTS": len(RULE_SLOTS),
    "PC_NX_INTERNAL": NAMED_SLOTS.index("network.deny_internal"),   # ebpf/net.bpf.h: pc_named_rules
    "PC_NX_METADATA": NAMED_SLOTS.index("network.deny_metadata"),
    "PC_NX_SOURCE_ROUTE": NAMED_SLOTS.index("network.source_route"),
    "PC_NX_SCAN": NAMED_SLOTS.index("network.scan"),                # issue 12
    "PC_NX_SSH": NAMED_SLOTS.index("network.ssh"),
    "PC_NX_INBOUND": NAMED_SLOTS.index("network.inbound"),
    "PC_NX_STDIO": NAMED_SLOTS.index("exec.stdio_socket"),
    "PC_NX_FAMILY": NAMED_SLOTS.index("network.socket_family"),
    "PC_NX_SLOTS": NAMED_SLOT_COUNT,
    "PC_ADDR_RULES": ADDR_RULES,
    "PC_EXEC_NAMES_MAX": capacity.EXEC_NAMES_MAX,   # map sizes: core/capacity.py (issue 13)
    "PC_LPM_MAX": capacity.LPM_MAX,
    "PC_AGENTS_MAX": capacity.AGENTS_MAX,
}
