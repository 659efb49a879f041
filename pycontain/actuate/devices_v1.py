"""GPU allocation through the cgroup v1 devices controller (hybrid hosts
where the BPF device program cannot be used).

A v1 devices cgroup inherits its parent's allow-list; denying
``c 195:N rwm`` for each GPU minor not granted removes exactly those from it.
Writes go to the agent's own v1 devices cgroup only (never to one shared
with processes outside the agent).
"""

from __future__ import annotations

import os

from .cgroups import fs


def v1_devices_dir(cgroup) -> str | None:
    """The agent's own v1 devices cgroup, if it has one."""
    d = (getattr(cgroup, "v1_paths", None) or {}).get("devices")
    return d if d and os.path.exists(os.path.join(d, "devices.deny")) else None


def deny_lines(denied_minors, major: int = 195) -> list[str]:
    return [f"c {major}:{m} rwm" for m in denied_minors]


def confine_v1(devices_dir: str, denied_minors) -> int:
    """Deny each minor; return how many entries were written. The kernel
    takes one rule per write."""
    n = 0
    for line in deny_lines(denied_minors):
        fs.write(os.path.join(devices_dir, "devices.deny"), line)
        n += 1
    return n
