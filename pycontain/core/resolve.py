"""DNS names in network rules: resolved at load, re-resolved periodically.

The lookup function is injected (socket.getaddrinfo in production, a fake in
tests), so this stays pure. When the addresses change, the controller
recompiles the kernel tables and rewrites the maps in place.
"""

from __future__ import annotations

from typing import Callable


def hosts_in_policy(policy) -> list[str]:
    rules = list(policy.network.allow) + list(policy.network.deny)
    return sorted({h for r in rules for h in r.hosts})


class Resolver:
    def __init__(self, hosts: list[str], lookup: Callable[[str], list[str]], interval_s: float = 300.0):
        self.hosts = list(hosts)
        self.lookup = lookup
        self.interval_s = interval_s
        self.addresses: dict[str, list[str]] = {h: [] for h in self.hosts}
        self._next = 0.0

    def due(self, now: float) -> bool:
        return bool(self.hosts) and now >= self._next

    def refresh(self, now: float) -> bool:
        """Re-resolve every name; True when any address list changed. A name
        that fails to resolve keeps its last known addresses (fail static)."""
        self._next = now + self.interval_s
        changed = False
        for h in self.hosts:
            try:
                new = sorted(set(self.lookup(h)))
            except OSError:
                new = []
            if new and new != self.addresses.get(h):
                self.addresses[h] = new
                changed = True
        return changed
