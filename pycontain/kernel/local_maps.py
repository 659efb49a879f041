"""Write the local-services maps of ebpf/local.bpf.h (issue 10 part 4).

* ``pc_local_rule[0]``: the rule id of network.local_services;
* ``pc_local_svc``: listed host:port services and the node's resolvers
  (/etc/resolv.conf, plus systemd-resolved's stubs 127.0.0.53/54) on port 53;
* ``pc_local_unix``: listed unix socket paths and abstract names.

New entries are written before stale ones are removed, so a reload never
refuses a listed service for an instant.
"""

from __future__ import annotations

import ctypes

from ..core.kernel_rules import KernelTables
from ..core.local_services import inet_entries, unix_entries
from ..core.resolve import read_nameservers

ANY_AGENT = 0xFFFFFFFF


def write_local_tables(bpf, tables: KernelTables) -> None:
    try:
        resolvers = read_nameservers()
    except OSError:
        resolvers = []
    rule = bpf[b"pc_local_rule"]
    rule[ctypes.c_int(0)] = ctypes.c_uint32(tables.local_rule or 0)
    svc = bpf[b"pc_local_svc"]
    want_svc = set()
    for addr, port in inet_entries(tables.local_services, resolvers):
        k = svc.Key()
        k.port = port
        ctypes.memmove(ctypes.addressof(k.addr), addr, 16)
        svc[k] = ctypes.c_uint32(1)
        want_svc.add((bytes(addr), port))
    for k in list(svc.keys()):
        if (bytes(k.addr), k.port) not in want_svc:
            del svc[k]
    unix = bpf[b"pc_local_unix"]
    want_unix = set()
    for length, path in unix_entries(tables.local_services):
        k = unix.Key()
        k.len = length
        ctypes.memmove(ctypes.addressof(k) + type(k).path.offset, path, len(path))
        unix[k] = ctypes.c_uint32(ANY_AGENT)
        want_unix.add((length, bytes(path)))
    for k in list(unix.keys()):
        if (k.len, _raw_path(k)) not in want_unix:
            del unix[k]


def _raw_path(k) -> bytes:
    """All 108 bytes of the key's path (ctypes would stop a char array at its first NUL)."""
    field = type(k).path
    return ctypes.string_at(ctypes.addressof(k) + field.offset, field.size)
