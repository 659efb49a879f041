"""Policy → contents of the kernel's deny maps (pure).

The controller writes a :class:`KernelTables` into the BPF maps declared in
ebpf/pycontain.h. Rule id 0 means "no rule"; ids index ``rules`` so user space
can name the rule a kernel verdict came from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .events import ConfigFlag, Mode, PatternWhere


@dataclass
class KernelTables:
    mode: Mode = Mode.ENFORCE
    flags: ConfigFlag = ConfigFlag(0)
    rules: dict[int, str] = field(default_factory=dict)            # rule id -> rule name, ids from 1
    ports: dict[int, tuple[int, int]] = field(default_factory=dict)  # port -> (tcp rule id, udp rule id)
    deny4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    allow4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    deny6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    allow6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    exec_names: dict[str, int] = field(default_factory=dict)       # lower-cased basename -> rule id
    # (lower-cased substring of at most PATTERN_LEN bytes, where, rule id); at most MAX_PATTERNS
    exec_patterns: list[tuple[str, PatternWhere, int]] = field(default_factory=list)
