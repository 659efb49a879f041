"""Alerts stay quiet on a healthy node (issue 13 part 5): a hook counts as
down only if the policy in force needs it; kernel kills count as actions."""

from __future__ import annotations

from prometheus_client import generate_latest
from test_app_session import fake_decode, rig, started  # noqa: F401  (fixtures; fake_decode is autouse)
from test_engine import exec_event

from pycontain.core.events import Flag, Verdict
from pycontain.core.hooks_needed import hooks_needed
from pycontain.core.kernel_rules import compile_policy, exec_verdict
from pycontain.core.policy import builtin_policy, load_policy_text
from pycontain.observe.metrics import make_registry

# what `Probes.hook_status()` reports on this VM (kernel 6.18, no LSM, no kprobes)
THIS_HOST = {
    "cgroup:cgroup_attach_task": "attached", "cgroup:cgroup_mkdir": "attached",
    "sched:sched_process_exec": "attached", "sched:sched_process_exit": "attached",
    "syscalls:sys_enter_socket": "attached", "cgroup:sock_ops": "attached (per agent cgroup)",
    "raw_tp:sched_process_fork": "attached",
    "kprobe": "unavailable: kernel built without kprobe events (no kprobe_events in tracefs)",
    "lsm": "unavailable: cannot read /sys/kernel/security/lsm (securityfs not mounted?)",
    "cgroup:connect4": "attached (per agent cgroup)", "cgroup:sendmsg4": "attached (per agent cgroup)",
    "cgroup:sock_create": "attached (per agent cgroup)", "cgroup_skb:egress": "attached (per agent cgroup)",
}


def down_and_needed(policy, status):
    needed = hooks_needed(policy, status)
    return sorted(h for h, s in status.items() if not s.startswith("attached") and h in needed)


def test_hooks_this_kernel_lacks_are_not_needed():
    for name in ("default", "strict"):
        assert down_and_needed(builtin_policy(name), THIS_HOST) == []


def test_a_needed_hook_that_is_down_counts():
    status = dict(THIS_HOST, **{"cgroup:connect4": "unavailable: EPERM", "sched:sched_process_exec": "failed"})
    assert down_and_needed(builtin_policy("default"), status) == ["cgroup:connect4", "sched:sched_process_exec"]
    # a policy without network rules does not need the network hooks
    assert down_and_needed(load_policy_text("exec: {deny: [xmrig]}\n"), status) == ["sched:sched_process_exec"]


def test_probe_required_is_exported_and_a_kernel_kill_is_an_action(rig):   # noqa: F811
    s, p = started(rig)
    p.hook_status = lambda: dict(THIS_HOST)
    s.ctl._publish_hooks()
    t = compile_policy(builtin_policy("default"))
    rid = exec_verdict(t, "/tmp/xmrig", ["xmrig"])
    p.push(exec_event(b"/tmp/xmrig", [b"xmrig"], verdict=Verdict.DENY, rule_id=rid, flags=Flag.KILLED, pid=9,
                      agent_id=p.tracked["/sys/fs/cgroup/trainer"]))
    s.step(0)
    text = generate_latest(make_registry(s.state)).decode()
    assert 'pycontain_actions_total{action="kill",agent="trainer"} 1.0' in text
    assert 'pycontain_probe_required{hook="lsm"} 0.0' in text
    assert 'pycontain_probe_required{hook="sched:sched_process_exec"} 1.0' in text
    v = [r for r in rig.records() if r["kind"] == "exec"][0]
    assert v["killed"] is True and v["rule"] == "exec.deny:xmrig"
