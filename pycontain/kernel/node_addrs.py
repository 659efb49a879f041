"""The node's own addresses, for the local-services guard (issue 10 part 4).

A service bound to a wildcard address (sshd on 0.0.0.0:22, a database on
[::]:5432) answers on every address of the node, not only on loopback: a
connect to the node's own eth0 address is routed through lo to the same
listener. The guard in ebpf/local.bpf.h judges a destination found in
``pc_node_addrs`` like 127.0.0.1 (the agent's own listener, a listed service
or a node resolver, else refused).

The addresses come from netlink (pyroute2, RTM_GETADDR) and are kept current
by a thread subscribed to the kernel's address notifications: an address
added later is in the map within milliseconds of the kernel announcing it
(until then it is judged as a remote address: documented in
docs/threat-model.md). New entries are written before stale ones go.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

NodeAddr = tuple[int, bytes]       # (AF_INET | AF_INET6, 16 bytes, IPv4 in the first 4)


def _key(family: int, text: str) -> NodeAddr | None:
    try:
        packed = ipaddress.ip_address(text.split("%", 1)[0]).packed
    except ValueError:
        return None
    return family, packed.ljust(16, b"\0")


def node_addresses() -> set[NodeAddr]:
    """Every address configured on an interface of this network namespace."""
    from pyroute2 import IPRoute

    out: set[NodeAddr] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            k = _key(msg["family"], text) if text else None
            if k and k[0] in (socket.AF_INET, socket.AF_INET6):
                out.add(k)
    return out


def write_node_addrs(table: Any, addrs: Iterable[NodeAddr]) -> None:
    want = set(addrs)
    for family, packed in want:
        k = table.Key()
        k.family = family
        ctypes.memmove(ctypes.addressof(k) + type(k).addr.offset, packed, 16)
        table[k] = ctypes.c_uint32(1)
    for k in list(table.keys()):
        raw = ctypes.string_at(ctypes.addressof(k) + type(k).addr.offset, 16)
        if (int(k.family), raw) not in want:
            try:
                del table[k]
            except KeyError:
                pass


# rtnetlink multicast groups (linux/rtnetlink.h)
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100


class NodeAddrWatch:
    """Calls `on_change` at start and after every address notification.

    The subscription is a plain rtnetlink socket (stdlib): its messages only
    say "read again", and pyroute2 0.9's IPRoute reads its socket through its
    own event loop, so select() on it never fires."""

    def __init__(self, on_change: Callable[[], None]):
        self.on_change = on_change
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))   # before the first read: no gap
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()      # close() ends the wait at once
        on_change()
        self._thread = threading.Thread(target=self._run, name="node-addrs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _w, _x = select.select([self._sock.fileno(), self._wake_r], [], [], 0.5)
                if self._sock.fileno() not in ready:
                    continue
                while True:                  # drain the burst; the map is rebuilt whole
                    try:
                        self._sock.recv(65536, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                self.on_change()
            except Exception as e:          # pragma: no cover - socket closed under us
                if not self._stop.is_set():
                    log.warning("node address watch stopped: %s", e)
                return

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(2)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
