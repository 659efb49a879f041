"""The daemon's agents, identified by cgroup (the kernel's identity), not by name.

A cgroup is one agent however it came to be tracked: adopted through the
state API (a Slurm prolog), matched by a policy selector, or both. The first
name it got stays its name (so metric series and escalation state never
split); later names are aliases that `release` also accepts. A released
cgroup is not picked up again by the selectors while it exists: the epilog
released it on purpose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

ADOPT, SCAN = "adopt", "scan"


def cgroup_id(path: str) -> int:
    """The cgroup v2 id the kernel uses (pc_agents key): the dir's inode number."""
    return os.stat(path).st_ino


@dataclass
class Tracked:
    name: str
    path: str
    sources: set[str] = field(default_factory=set)    # ADOPT and/or SCAN
    aliases: set[str] = field(default_factory=set)    # other names it was adopted under


class AgentRegistry:
    def __init__(self) -> None:
        self.tracked: dict[int, Tracked] = {}
        self.released: dict[int, str] = {}            # cgroup id -> path: kept out of the scan

    def find(self, name: str) -> int | None:
        """The cgroup id of the agent called ``name`` (its name or an alias)."""
        return next((cid for cid, t in self.tracked.items() if name == t.name or name in t.aliases), None)

    def add(self, cid: int, name: str, path: str, source: str) -> Tracked:
        t = self.tracked.setdefault(cid, Tracked(name, path))
        t.sources.add(source)
        if name != t.name:
            t.aliases.add(name)
        if source == ADOPT:
            self.released.pop(cid, None)
        return t

    def remove(self, cid: int, *, released: bool = False) -> Tracked | None:
        t = self.tracked.pop(cid, None)
        if t is not None and released:
            self.released[cid] = t.path
        return t

    def adopted(self) -> dict[str, str]:
        """name -> path of every adopted agent (what a restarted daemon re-adopts)."""
        return {t.name: t.path for t in self.tracked.values() if ADOPT in t.sources}

    def prune_released(self) -> None:
        for cid, path in list(self.released.items()):
            if not os.path.isdir(path):
                del self.released[cid]
