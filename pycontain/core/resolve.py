"""DNS names in network rules: resolved at load, re-resolved periodically.

The lookup function is injected (socket.getaddrinfo in production, a fake in
tests), so this stays pure. When the addresses change, the controller
recompiles the kernel tables and rewrites the maps in place.

The pseudo-name ``@nameservers`` (a network rule with ``nameservers: true``)
stands for the node's DNS resolvers: the ``nameserver`` lines of
/etc/resolv.conf, read through an injectable function as well.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # policy.py imports this module (NAMESERVERS)
    from .policy import Policy

NAMESERVERS = "@nameservers"
RESOLV_CONF = "/etc/resolv.conf"


def hosts_in_policy(policy: Policy) -> list[str]:
    rules = list(policy.network.allow) + list(policy.network.deny) + list(policy.network.ssh_allow)
    return sorted({h for r in rules for h in r.hosts})


def parse_resolv_conf(text: str) -> list[str]:
    """The nameserver addresses of a resolv.conf (scope ids dropped)."""
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(str(ipaddress.ip_address(parts[1].split("%", 1)[0])))
            except ValueError:
                continue
    return out


def read_nameservers(path: str = RESOLV_CONF) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_resolv_conf(fh.read(65536))
    except OSError:
        return []


class Resolver:
    """Addresses of the host names a policy names.

    ``due(now)`` says a refresh is due; ``refresh(now)`` re-resolves every
    name and returns True when any address list changed (``addresses`` then
    holds the new lists, ready for compile_policy and Engine.set_resolved).
    """

    def __init__(self, hosts: list[str], lookup: Callable[[str], list[str]], interval_s: float = 300.0,
                 nameservers: Callable[[], list[str]] = read_nameservers):
        self.hosts = list(hosts)
        self.lookup = lookup
        self.nameservers = nameservers
        self.interval_s = interval_s
        self.addresses: dict[str, list[str]] = {h: [] for h in self.hosts}
        self._next = 0.0

    def due(self, now: float) -> bool:
        return bool(self.hosts) and now >= self._next

    def _resolve(self, host: str) -> list[str]:
        raw = self.nameservers() if host == NAMESERVERS else self.lookup(host)
        out = set()
        for a in raw:
            try:
                out.add(str(ipaddress.ip_address(str(a).split("%", 1)[0])))
            except ValueError:
                continue            # never let a bad answer into the kernel tables
        return sorted(out)

    def refresh(self, now: float) -> bool:
        """Re-resolve every name; True when any address list changed. A name
        that fails to resolve keeps its last known addresses (fail static):
        a DNS outage must not open a deny rule or close an allow rule."""
        self._next = now + self.interval_s
        changed = False
        for h in self.hosts:
            try:
                new = self._resolve(h)
            except OSError:
                new = []
            if new and new != self.addresses.get(h):
                self.addresses[h] = new
                changed = True
        return changed
