"""Actuation: agent cgroups (v2 and hybrid v1/v2), budgets, the throttle,
freeze/kill, launching an agent into its cgroup, the fail-closed watchdog and
discovery of cgroups that a policy's selectors match.

It may import `core` only. It acts on the host (cgroup files, signals,
processes) but decides nothing: decisions come from the core's engine.
"""
