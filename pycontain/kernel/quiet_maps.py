"""The routine-destination map of ebpf/aggregate.bpf.h (issue 14 part 3).

``pc_net_quiet``: (agent, family, protocol, dport, daddr) -> count.
User space inserts a destination after it has seen its first
allowed record and judged it routine; the kernel then counts repeat
connects/sends to it instead of sending records. Only this module writes it.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple


class QuietKey(NamedTuple):
    agent: int
    family: int
    proto: int
    dport: int
    daddr: bytes     # 16 bytes, IPv4 in the first 4


class QuietCount(NamedTuple):
    key: QuietKey
    total: int


def _table(bpf):
    try:
        return bpf[b"pc_net_quiet"]
    except KeyError:     # network hooks not compiled in
        return None


def add(bpf, key: QuietKey) -> bool:
    t = _table(bpf)
    if t is None:
        return False
    k = t.Key()
    k.agent, k.family, k.proto, k.dport = key.agent, key.family, key.proto, key.dport
    ctypes.memmove(ctypes.addressof(k.daddr), key.daddr, 16)
    v = t.Leaf()
    v.count = 0
    t[k] = v
    return True


def _key(k) -> QuietKey:
    return QuietKey(int(k.agent), int(k.family), int(k.proto), int(k.dport), bytes(k.daddr))


def read(bpf) -> list[QuietCount]:
    t = _table(bpf)
    if t is None:
        return []
    return [QuietCount(_key(k), int(v.count)) for k, v in t.items()]


def delete(bpf, keys: list[QuietKey]) -> None:
    t = _table(bpf)
    if t is None:
        return
    for key in keys:
        k = t.Key()
        k.agent, k.family, k.proto, k.dport = key.agent, key.family, key.proto, key.dport
        ctypes.memmove(ctypes.addressof(k.daddr), key.daddr, 16)
        try:
            del t[k]
        except KeyError:
            pass


def clear(bpf) -> None:
    t = _table(bpf)
    if t is not None:
        for k in list(t.keys()):
            try:
                del t[k]
            except KeyError:
                pass
