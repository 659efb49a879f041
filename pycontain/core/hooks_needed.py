"""Which kernel hooks a policy needs (pure), so that an alert fires only
for a hook whose absence weakens *this* policy's enforcement.

`pycontain_probe_attached{hook}` is 0 for hooks this kernel lacks (LSM and
kprobes on many kernels): pycontain then uses the strongest hook available,
so they are never *needed*. The tracepoints that follow processes are always
needed; the network, socket and cgroup-birth hooks only when the policy has
rules of that kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy import Policy

# strengthening hooks with a fallback: their absence is a note, not an alert
OPTIONAL_PREFIXES = ("lsm", "kprobe", "fentry", "fexit")
NETWORK_PREFIXES = ("cgroup:connect", "cgroup:sendmsg", "cgroup_skb:", "sock:")
SOCKET_HOOKS = ("cgroup:sock_create", "syscalls:sys_enter_socket")


def _network_rules(p: Policy) -> bool:
    nw = p.network
    return bool(nw.deny or nw.default == "deny" or nw.deny_internal or nw.deny_metadata or nw.detect)


def hook_needed(policy: Policy | None, hook: str) -> bool:
    if policy is None or hook.startswith(OPTIONAL_PREFIXES):
        return False
    if hook.startswith(NETWORK_PREFIXES):
        return _network_rules(policy)
    if hook in SOCKET_HOOKS:
        return policy.sockets.deny_raw or policy.sockets.deny_packet or policy.sockets.deny_other_families
    if hook == "cgroup:cgroup_mkdir":
        return bool(policy.agents)
    return True


def hooks_needed(policy: Policy | None, hooks: Iterable[str]) -> set[str]:
    return {h for h in hooks if hook_needed(policy, h)}
