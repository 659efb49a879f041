"""Finding agents started by others (daemon mode).

The policy's `agents:` selectors name cgroups by glob over the cgroup2 path
relative to its mount, by systemd unit name (the leaf dir of a unit's cgroup),
or by command (basename glob of a process's executable: its cgroup becomes
the agent). Each match is named `<selector>:<leaf>`, always: a name must not
change when a second cgroup matches (metric series and escalation state are
kept by name). Names live only while the cgroup lives.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

MAX_DEPTH = 12
MAX_NAME = 64


@dataclass(frozen=True)
class Match:
    name: str
    path: str       # absolute cgroup2 dir


def _sel(sel, key):
    return getattr(sel, key, None) if not isinstance(sel, dict) else sel.get(key)


def _walk(root: str):
    root_depth = root.rstrip("/").count("/")
    for dirpath, dirnames, _files in os.walk(root):
        if dirpath.count("/") - root_depth >= MAX_DEPTH:
            dirnames[:] = []
        yield dirpath


def clean_name(s: str) -> str:
    return _clean(s)


def _clean(s: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-:" else "_" for c in s)[:MAX_NAME]


def find_agents(selectors, cgroup2_root: str, proc_root: str = "/proc", exclude: set[str] | None = None) -> list[Match]:
    """Return the cgroups the selectors pick now. `exclude`: pycontain's own
    cgroups; a match that contains one of them is skipped (the controller
    never contains itself)."""
    exclude = exclude or set()
    found: dict[str, str] = {}
    dirs = None
    for sel in selectors:
        sname = _sel(sel, "name")
        hits: list[str] = []
        cg_glob, unit_glob, cmd_glob = _sel(sel, "cgroup"), _sel(sel, "systemd_unit"), _sel(sel, "command")
        if cg_glob or unit_glob:
            if dirs is None:
                dirs = list(_walk(cgroup2_root))
            for d in dirs:
                rel = os.path.relpath(d, cgroup2_root)
                if rel == ".":
                    continue
                if cg_glob and fnmatch.fnmatchcase(rel, cg_glob.strip("/")):
                    hits.append(d)
                elif unit_glob and fnmatch.fnmatchcase(os.path.basename(d), unit_glob):
                    hits.append(d)
        if cmd_glob:
            hits.extend(_cgroups_of_command(cmd_glob, cgroup2_root, proc_root))
        # a cgroup that holds pycontain itself (its own or an ancestor) is never an agent
        hits = sorted({h for h in hits if not any(e == h or e.startswith(h.rstrip("/") + "/") for e in exclude)})
        # a selected cgroup's descendants are part of it, not agents of their own
        hits = [h for h in hits if not any(h.startswith(o + "/") for o in hits if o != h)]
        for h in hits:
            found.setdefault(h, _clean(f"{sname}:{os.path.basename(h)}"))
    return [Match(name=n, path=p) for p, n in sorted(found.items())]


def _cgroups_of_command(glob: str, cgroup2_root: str, proc_root: str) -> list[str]:
    out = []
    for pid in os.listdir(proc_root):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"{proc_root}/{pid}/exe")
            if not fnmatch.fnmatchcase(os.path.basename(exe), glob):
                continue
            with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as fh:
                for line in fh:
                    hid, _ctrls, path = line.rstrip("\n").split(":", 2)
                    if hid == "0":
                        out.append(os.path.join(cgroup2_root, path.lstrip("/")))
        except OSError:
            continue
    return out
