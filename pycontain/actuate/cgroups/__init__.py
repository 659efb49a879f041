"""Agent cgroups on pure cgroup v2 and hybrid (v1 controllers + cgroup2) hosts.

See docs/cgroups.md.
"""

from __future__ import annotations

from .agent import AgentCgroup, CreatePlan, home_cgroup, make_home, remove_home
from .layout import CgroupLayout, detect_layout

__all__ = ["AgentCgroup", "CreatePlan", "home_cgroup", "make_home", "remove_home", "CgroupLayout", "detect_layout"]
