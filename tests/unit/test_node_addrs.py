"""The node's own addresses map (pycontain/kernel/node_addrs.py): written
whole, new entries before stale ones go (issue 10 part 4)."""

from __future__ import annotations

import ctypes
import socket

from pycontain.kernel.node_addrs import _key, write_node_addrs


class _Key(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint8), ("_pad0", ctypes.c_uint8 * 3), ("addr", ctypes.c_uint8 * 16)]


class _Table(dict):
    Key = _Key
    log: list[str]

    def __setitem__(self, k, v):
        self.log.append("add")
        super().__setitem__(bytes(k), v)

    def __delitem__(self, k):
        self.log.append("del")
        super().__delitem__(bytes(k))

    def keys(self):
        return [_Key.from_buffer_copy(b) for b in super().keys()]


def _t() -> _Table:
    t = _Table()
    t.log = []
    return t


def test_keys_hold_ipv4_in_the_first_four_bytes_and_drop_scopes():
    assert _key(socket.AF_INET, "192.0.2.2") == (socket.AF_INET, bytes([192, 0, 2, 2]) + b"\0" * 12)
    fam, packed = _key(socket.AF_INET6, "fe80::1%eth0")
    assert fam == socket.AF_INET6 and packed[:2] == b"\xfe\x80" and packed[-1] == 1
    assert _key(socket.AF_INET, "not an address") is None


def test_a_rewrite_adds_before_it_removes():
    t = _t()
    a, b = _key(socket.AF_INET, "192.0.2.2"), _key(socket.AF_INET6, "2001:db8::5")
    write_node_addrs(t, [a, b])
    assert len(t) == 2
    t.log.clear()
    c = _key(socket.AF_INET, "198.51.100.250")
    write_node_addrs(t, [a, c])
    assert t.log == ["add", "add", "del"]         # never a moment with fewer addresses than either set
    fams = sorted(k.family for k in t.keys())
    assert fams == [socket.AF_INET, socket.AF_INET]
