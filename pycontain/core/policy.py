"""The policy language: YAML → a typed, validated, frozen Policy.

Unknown keys, wrong types, bad sizes, durations, CIDRs, globs and ports are
errors naming file, line and key path (pycontain.errors.PolicyError, exit 2).
See docs/policy.md for every key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import yaml

from . import builtins
from .capacity import table_overflows
from .decisions import Action
from .errors import PolicyError
from .gpu_devices import GpuSpec
from .gpu_policy_extra import SignaturePolicy, gpu_extras_dict, read_devices, read_signature
from .kernel_rules import compile_policy
from .local_services import read_local_services
from .policy_extends import resolve
from .policy_yaml import Node, compose, gather, merged
from .resolve import NAMESERVERS
from .rule_ids import RULE_META_KEYS, RuleMeta, meta_fields, read_rule_meta

AGENT_NAME = r"[a-z0-9][a-z0-9_.-]{0,31}"
HOSTNAME = (r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
            r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")

ACTION_KEYS = ("exec", "network", "stratum", "socket", "cpu", "memory", "pids",
               "gpu_memory", "gpu_util", "gpu_program", "gpu_correlation", "gpu_signature")
DEFAULT_ACTIONS = {
    "exec": "kill-process", "network": "deny", "stratum": "kill", "socket": "deny",
    "cpu": "throttle", "memory": "throttle-then-kill", "pids": "alert",
    "gpu_memory": "kill", "gpu_util": "throttle-then-kill", "gpu_program": "kill-process",
    "gpu_correlation": "kill", "gpu_signature": "kill",
}
ACTION_NAMES = {a.value: a for a in Action}

LOOPBACK_PROBES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
DEFAULT_GRACE_S = 10.0
DYNAMIC_USER_RANGE = (61184, 65519)         # systemd's DynamicUser= range


@dataclass(frozen=True)
class AgentSelector:
    name: str
    cgroup: str | None = None
    systemd_unit: str | None = None
    command: str | None = None


@dataclass(frozen=True)
class Budgets:
    cpu: float | None = None
    memory_bytes: int | None = None
    memory_high_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True)
class GpuPolicy:
    required: bool = False
    memory_bytes: int | None = None
    sm_util_max: float | None = None        # percent 0..100
    sm_util_window_s: float = 30.0
    allowed_programs: tuple[str, ...] = ()  # empty = any program may use a GPU
    correlate_unapproved_connect: bool = True
    throttle_duty_cycle: float = 0.5        # fraction of each period the agent may run while throttled
    throttle_period_s: float = 1.0
    sample_interval_s: float = 1.0
    devices: GpuSpec | None = None          # None = all GPUs (gpu_policy_extra.py)
    signature: SignaturePolicy | None = None  # None = the GPM miner signature rule is off
    correlation_window_s: float = 600.0     # issue 12: unapproved connect -> GPU use by the same agent


@dataclass(frozen=True)
class ExecPolicy:
    mode: str = "deny-list"                 # or allow-list
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    deny_args: tuple[str, ...] = ()
    # program-scoped argument rules: (program glob, argv glob) — e.g. ssh + -R*
    deny_program_args: tuple[tuple[str, str], ...] = ()
    # issue 11: trusted executables, truncated argv, fileless execution
    trusted: tuple[str, ...] = ()           # real-path prefixes; empty = not enforced
    truncated_args: str = "deny"            # deny | alert: argv that cannot be read whole
    fileless: str = "deny"                  # deny | alert | allow: memfd, deleted, O_TMPFILE
    stdio_socket: str = "kill-process"      # issue 12: kill-process | off (reverse shells, ebpf/stdio.c)


@dataclass(frozen=True)
class NetRule:
    cidrs: tuple[str, ...] = ()             # empty = any address
    hosts: tuple[str, ...] = ()             # DNS names, resolved at load and periodically
    ports: tuple[tuple[int, int], ...] = ()  # inclusive ranges; empty = any port
    protocol: str = "any"                   # tcp | udp | any


@dataclass(frozen=True)
class ScanPolicy:
    """network.scan (issue 12, ebpf/detect.bpf.h): past these, new destinations are refused."""

    enabled: bool = True
    max_hosts: int = 256        # new hosts per agent per window
    max_ports: int = 64         # distinct ports per host per window
    window_s: float = 60.0


@dataclass(frozen=True)
class NetworkPolicy:
    default: str = "allow"
    allow: tuple[NetRule, ...] = ()
    deny: tuple[NetRule, ...] = ()
    deny_internal: bool = False
    deny_metadata: bool = False
    detect: tuple[str, ...] = ()
    resolve_interval_s: float = 300.0
    inbound: str = "loopback"               # issue 12: deny | loopback | allow (ebpf/inbound.c)
    scan: ScanPolicy = ScanPolicy()         # issue 12
    ssh_allow: tuple[NetRule, ...] = ()     # issue 12: SSH sessions only to these (and loopback)
    local_services: tuple[str, ...] = ()    # issue 10: core/local_services.py; ("any",) = rule off


@dataclass(frozen=True)
class SocketPolicy:
    deny_raw: bool = False
    deny_packet: bool = False
    # every family but unix, inet, inet6, netlink, packet and alg: their
    # traffic (vsock to the hypervisor, RDS, TIPC, MCTP...) passes no hook
    # that judges a destination (ebpf/socket.c)
    deny_other_families: bool = False


@dataclass(frozen=True)
class ActionSpec:
    ladder: tuple[Action, ...]
    grace_s: float


@dataclass(frozen=True)
class Privileges:
    """`privileges:` (issue 10): what `pycontain run` takes from its agent;
    each key relaxes one measure explicitly (actuate/privileges.py)."""

    no_new_privs: bool = True
    drop_capabilities: bool = True
    seccomp: bool = True
    dynamic_user: bool = True               # a fresh uid per agent unless `run --user` names one
    dynamic_user_range: tuple[int, int] = DYNAMIC_USER_RANGE
    # a user namespace hands the agent CAP_SYS_ADMIN over new mount and
    # network namespaces: files bound over the node's paths, abstract unix
    # names the host's sockets use; what the kernel judges by name stops
    # meaning what it names (actuate/privileges.py)
    user_namespaces: bool = False


@dataclass(frozen=True)
class Policy:
    name: str = "unnamed"
    mode: str = "enforce"
    source: str = "<builtin>"
    agents: tuple[AgentSelector, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    gpu: GpuPolicy = field(default_factory=GpuPolicy)
    exec: ExecPolicy = field(default_factory=ExecPolicy)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    sockets: SocketPolicy = field(default_factory=SocketPolicy)
    actions: dict[str, ActionSpec] = field(default_factory=dict)     # action key -> ActionSpec
    escalation_grace_s: float = DEFAULT_GRACE_S
    privileges: Privileges = field(default_factory=Privileges)     # issue 10
    # issue 13: id, severity and tags of list rules, by place ("exec.deny[3]"); core/rule_ids.py
    rule_meta: Mapping[str, RuleMeta] = field(default_factory=dict)

    def action(self, key: str) -> ActionSpec:
        return self.actions.get(key) or ActionSpec((Action.ALERT,), self.escalation_grace_s)


# ---- parsing ----------------------------------------------------------------

def _globs(n: Node) -> tuple[str, ...]:
    return tuple(gather(n.seq(), _glob))


def _glob(item: Node) -> str:
    g = item.str(maxlen=256)
    if g.count("[") != g.count("]"):
        raise item.error(f"{g!r} is not a valid glob (unbalanced brackets)")
    return g


def _program_globs(n: Node) -> tuple[str, ...]:
    """gpu.allowed_programs / gpu.signature.allowed_programs: programs are
    judged by the resolved file the kernel runs, in which no `.` or `..` is
    left: a path glob with one would never match as written (and matched an
    agent's `/usr/bin/../../tmp/m` before)."""
    def one(item: Node) -> str:
        g = _glob(item)
        if "/" in g and any(part in (".", "..") for part in g.split("/")):
            raise item.error(f"{g!r}: '.' or '..' in a program path (programs are judged by the resolved "
                             "file the kernel runs: write that path)")
        return g
    return tuple(gather(n.seq(), one))


def _rule_globs(n: Node) -> tuple[str, ...]:
    """exec.deny / deny_args: globs, each a string or ``{name: glob, id:,
    severity:, tags:}`` (the metadata is read by rule_ids.read_rule_meta)."""
    def one(item: Node) -> str:
        if isinstance(item.node, yaml.MappingNode):
            m = _mapping(item, ("name",) + RULE_META_KEYS)
            if "name" not in m:
                raise item.error("a rule mapping needs 'name' (the glob)")
            return _glob(m["name"])
        return _glob(item)
    return tuple(gather(n.seq(), one))


def _ports(n: Node) -> list[tuple[int, int]]:
    return gather(n.seq(), _port)


def _port(item: Node) -> tuple[int, int]:
    v = item.scalar()
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= 65535:
            raise item.error(f"port {v} is out of range 1-65535")
        return v, v
    return _range(item)


def _range(n: Node) -> tuple[int, int]:
    v = n.scalar()
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(v))
    if not m:
        raise n.error(f"{v!r} is not a port range (use e.g. \"5555-5560\")")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1 <= lo <= hi <= 65535):
        raise n.error(f"port range {v!r} is invalid (1 <= low <= high <= 65535)")
    return lo, hi


def _netrule(n: Node) -> NetRule:
    m = _mapping(n, NETRULE_KEYS)
    cidrs: list[str] = []
    for key in ("cidr", "cidrs"):
        if key in m:
            items = m[key].seq() if key == "cidrs" else [m[key]]
            for item in items:
                raw = item.str(maxlen=64)
                try:
                    cidrs.append(str(ipaddress.ip_network(raw, strict=False)))
                except ValueError:
                    raise item.error(f"{raw!r} is not a valid CIDR") from None
    hosts: list[str] = []
    for key in ("host", "hosts"):
        if key in m:
            items = m[key].seq() if key == "hosts" else [m[key]]
            hosts += [i.str(HOSTNAME, "host name", 253).lower().rstrip(".") for i in items]
    if "nameservers" in m and m["nameservers"].bool():
        hosts.append(NAMESERVERS)     # the node's DNS resolvers (/etc/resolv.conf), re-read periodically
    ports = _ports(m["ports"]) if "ports" in m else []
    if "port_range" in m:
        ports.append(_range(m["port_range"]))
    proto = m["protocol"].choice(("tcp", "udp", "any")) if "protocol" in m else "any"
    if not cidrs and not hosts and not ports:
        raise n.error("a network rule needs at least one of cidr, host, nameservers or ports")
    return NetRule(tuple(cidrs), tuple(hosts), tuple(ports), proto)


def _action_spec(n: Node, grace: float) -> ActionSpec:
    if isinstance(n.node, yaml.MappingNode):
        m = _mapping(n, ACTION_SPEC_KEYS)
        if "ladder" not in m:
            raise n.error("an action mapping needs 'ladder'")
        ladder = tuple(_action_name(i) for i in m["ladder"].seq())
        if not ladder:
            raise m["ladder"].error("the ladder is empty")
        return ActionSpec(ladder, m["grace"].duration() if "grace" in m else grace)
    text = n.str(maxlen=128)
    return ActionSpec(tuple(_action_name(n, part) for part in text.split("-then-")), grace)


def _action_name(n: Node, text: str | None = None) -> Action:
    name = text if text is not None else n.str(maxlen=32)
    if name not in ACTION_NAMES or name == "thaw":
        raise n.error(f"{name!r} is not an action", "actions: alert, deny, throttle, freeze, kill, kill-process "
                                                    "(chain with -then-, e.g. throttle-then-kill)")
    return ACTION_NAMES[name]


# ---- sections: each section's keys, declared once ---------------------------
#
# A section's known keys, in the order an unknown-key hint lists them. Flat
# sections declare them as a table, key -> (field of the section's dataclass,
# reader), which both validates the keys and reads the values (_read).

# keyword arguments of a section's dataclass (fields of different types)
Fields: TypeAlias = dict[str, Any]
Reader: TypeAlias = Callable[[Node], object]
# a reader under field None returns several fields at once
KeyTable: TypeAlias = Mapping[str, tuple[str, Reader] | tuple[None, Callable[[Node], Fields]]]

TOP_KEYS = ("name", "mode", "agents", "budgets", "gpu", "exec", "network", "sockets", "actions", "escalation",
            "privileges")
TOP_KEYS = (*TOP_KEYS, "extends")   # type: ignore[assignment]  # issue 14: merged away before reading
AGENT_SELECTORS = ("cgroup", "systemd_unit", "command")
AGENT_KEYS = ("name",) + AGENT_SELECTORS
BUDGET_KEYS = ("cpu", "memory", "memory_high", "pids")
NETRULE_KEYS = ("cidr", "cidrs", "host", "hosts", "nameservers", "ports", "port_range", "protocol") + RULE_META_KEYS
PROGRAM_ARGS_KEYS = ("program", "args") + RULE_META_KEYS
ACTION_SPEC_KEYS = ("ladder", "grace")
ESCALATION_KEYS = ("grace",)


def _mapping(n: Node, keys: Iterable[str]) -> dict[str, Node]:
    """The section as a mapping; an unknown key is an error with a did-you-mean hint."""
    return n.mapping(tuple(keys))


def _read(m: dict[str, Node], table: KeyTable, first: tuple[str, ...] = ()) -> Fields:
    """Keyword arguments for the section's dataclass: every present key, read
    in table order (`first` ones before the rest: the order values are read
    in decides which of several errors is reported). A reader whose field is
    None returns several fields at once."""
    kw: Fields = {}

    def one(key: str) -> None:
        entry = table[key]
        if entry[0] is None:
            kw.update(entry[1](m[key]))
        else:
            kw[entry[0]] = entry[1](m[key])
    gather([k for k in first + tuple(k for k in table if k not in first) if k in m], one)
    return kw


def _sm_util(n: Node) -> Fields:
    s = _mapping(n, SM_UTIL_KEYS)
    if "max" not in s:
        raise n.error("sm_util needs 'max' (percent)")
    return _read(s, SM_UTIL_KEYS)


def _gpu_throttle(n: Node) -> Fields:
    return _read(_mapping(n, GPU_THROTTLE_KEYS), GPU_THROTTLE_KEYS)


SM_UTIL_KEYS: KeyTable = {
    "max": ("sm_util_max", lambda n: float(n.number(1, 100))),
    "window": ("sm_util_window_s", Node.duration),
}
GPU_THROTTLE_KEYS: KeyTable = {
    "duty_cycle": ("throttle_duty_cycle", lambda n: float(n.number(0.05, 0.95))),
    "period": ("throttle_period_s", Node.duration),
}
GPU_KEYS: KeyTable = {
    "required": ("required", Node.bool),
    "memory": ("memory_bytes", Node.size),
    "sm_util": (None, _sm_util),
    "allowed_programs": ("allowed_programs", _program_globs),
    "correlate_unapproved_connect": ("correlate_unapproved_connect", Node.bool),
    "throttle": (None, _gpu_throttle),
    "sample_interval": ("sample_interval_s", Node.duration),
    "devices": ("devices", read_devices),
    "signature": ("signature", lambda n: read_signature(n, _program_globs)),
    "correlation_window": ("correlation_window_s", Node.duration),   # issue 12
}


def _program_args(n: Node) -> tuple[tuple[str, str], ...]:
    def one(item: Node) -> list[tuple[str, str]]:
        r = _mapping(item, PROGRAM_ARGS_KEYS)
        if "program" not in r or "args" not in r:
            raise item.error("deny_program_args entries need 'program' and 'args'")
        prog = r["program"].str(maxlen=256)
        return [(prog, a) for a in _globs(r["args"])]
    return tuple(pa for group in gather(n.seq(), one) for pa in group)


def _trusted(n: Node) -> tuple[str, ...]:
    m = _mapping(n, ("paths",))
    if "paths" not in m:
        raise n.error("exec.trusted needs 'paths' (real-path prefixes such as /usr)")
    out = []
    for item in m["paths"].seq():
        path = item.str(maxlen=1024)
        if not path.startswith("/"):
            raise item.error(f"{path!r} is not an absolute path", "trusted paths are real paths such as /usr")
        out.append(path.rstrip("/") or "/")
    if not out:
        raise m["paths"].error("exec.trusted.paths is empty: no program could run")
    return tuple(out)


EXEC_KEYS: KeyTable = {
    "mode": ("mode", lambda n: n.choice(("deny-list", "allow-list"))),
    "allow": ("allow", _globs),
    "deny": ("deny", _rule_globs),
    "deny_args": ("deny_args", _rule_globs),
    "deny_program_args": ("deny_program_args", _program_args),
    "trusted": ("trusted", _trusted),                                          # issue 11
    "truncated_args": ("truncated_args", lambda n: n.choice(("deny", "alert"))),
    "fileless": ("fileless", lambda n: n.choice(("deny", "alert", "allow"))),
    "stdio_socket": ("stdio_socket", lambda n: n.choice(("kill-process", "off"))),   # issue 12
}


def _netrules(n: Node) -> tuple[NetRule, ...]:
    return tuple(gather(n.seq(), _netrule))


def _detect(n: Node) -> tuple[str, ...]:
    return tuple(item.choice(("stratum",)) for item in n.seq())


NETWORK_KEYS: KeyTable = {
    "default": ("default", lambda n: n.choice(("allow", "deny"))),
    "allow": ("allow", _netrules),
    "deny": ("deny", _netrules),
    "deny_internal": ("deny_internal", Node.bool),
    "deny_metadata": ("deny_metadata", Node.bool),
    "detect": ("detect", _detect),
    "resolve_interval": ("resolve_interval_s", Node.duration),
    "inbound": ("inbound", lambda n: n.choice(("deny", "loopback", "allow"))),   # issue 12
    "scan": ("scan", lambda n: _scan(n)),
    "ssh": ("ssh_allow", lambda n: _ssh(n)),
    "local_services": ("local_services", read_local_services),
}
SCAN_KEYS = ("max_hosts", "max_ports", "window")
SSH_KEYS = ("allow",)


def _scan(n: Node) -> ScanPolicy:
    """network.scan: false (off), or {max_hosts, max_ports, window}."""
    if isinstance(n.node, yaml.ScalarNode):
        return ScanPolicy(enabled=n.bool())
    m = _mapping(n, SCAN_KEYS)
    kw: dict[str, Any] = {}
    if "max_hosts" in m:
        kw["max_hosts"] = int(m["max_hosts"].number(1, 1 << 20, integer=True))
    if "max_ports" in m:
        kw["max_ports"] = int(m["max_ports"].number(1, 65536, integer=True))
    if "window" in m:
        kw["window_s"] = m["window"].duration()
        if not 1 <= kw["window_s"] <= 86400:
            raise m["window"].error("the scan window must be between 1s and 1d")
    return ScanPolicy(**kw)


def _ssh(n: Node) -> tuple[NetRule, ...]:
    """network.ssh: {allow: [destinations]}: SSH sessions to anything else are dropped."""
    m = _mapping(n, SSH_KEYS)
    return _netrules(m["allow"]) if "allow" in m else ()
SOCKET_KEYS: KeyTable = {
    "deny_raw": ("deny_raw", Node.bool),
    "deny_packet": ("deny_packet", Node.bool),
    "deny_other_families": ("deny_other_families", Node.bool),
}


def _agents(n: Node) -> tuple[AgentSelector, ...]:
    return tuple(gather(n.seq(), _agent))


def _agent(item: Node) -> AgentSelector:
    m = _mapping(item, AGENT_KEYS)
    if "name" not in m:
        raise item.error("an agent selector needs 'name'")
    kinds = [k for k in AGENT_SELECTORS if k in m]
    if len(kinds) != 1:
        raise item.error("an agent selector needs exactly one of cgroup, systemd_unit, command")
    return AgentSelector(m["name"].str(AGENT_NAME, "agent name (^[a-z0-9][a-z0-9_.-]{0,31}$)"),
                         **{kinds[0]: m[kinds[0]].str(maxlen=512)})


def _budgets(n: Node) -> Budgets:
    m = _mapping(n, BUDGET_KEYS)
    mem = m["memory"].size() if "memory" in m else None
    high = m["memory_high"].size() if "memory_high" in m else (int(mem * 0.9) if mem else None)
    if mem and high and high > mem:
        raise m["memory_high"].error("memory_high must not exceed memory")
    b = Budgets(cpu=float(m["cpu"].number(0.01, 4096)) if "cpu" in m else None, memory_bytes=mem,
                memory_high_bytes=high, pids=int(m["pids"].number(8, 4194304, integer=True)) if "pids" in m else None)
    if mem is not None and mem < 16 << 20:
        raise m["memory"].error("a memory budget under 16MiB cannot start an agent (it would lock the agent out)")
    return b


def _gpu(n: Node) -> GpuPolicy:
    return GpuPolicy(**_read(_mapping(n, GPU_KEYS), GPU_KEYS))


def _exec(n: Node) -> ExecPolicy:
    m = _mapping(n, EXEC_KEYS)
    e = ExecPolicy(**_read(m, EXEC_KEYS, first=("deny_program_args",)))
    if e.mode == "allow-list" and not e.allow:
        raise (m.get("mode") or n).error("allow-list mode needs a non-empty 'allow' list")
    return e


def _network(n: Node) -> NetworkPolicy:
    m = _mapping(n, NETWORK_KEYS)
    nw = NetworkPolicy(**_read(m, NETWORK_KEYS, first=("detect",)))
    if nw.default == "deny":
        for i, r in enumerate(nw.allow):
            if not (r.cidrs or r.hosts):
                raise m["allow"].seq()[i].error(
                    "under default: deny an allow entry needs an address (cidr, host or nameservers): "
                    "the kernel admits traffic by destination address",
                    "to allow these ports to any address say so: cidrs: [0.0.0.0/0, '::/0'] "
                    "(the kernel then enforces the port limit)")
    return nw


def _sockets(n: Node) -> SocketPolicy:
    return SocketPolicy(**_read(_mapping(n, SOCKET_KEYS), SOCKET_KEYS))


def _escalation_grace(n: Node) -> float:
    m = _mapping(n, ESCALATION_KEYS)
    return m["grace"].duration() if "grace" in m else DEFAULT_GRACE_S


def _actions(n: Node | None, grace: float) -> dict[str, ActionSpec]:
    """Every action key's ladder: the defaults, then the policy's own."""
    actions = {k: ActionSpec(tuple(ACTION_NAMES[p] for p in v.split("-then-")), grace)
               for k, v in DEFAULT_ACTIONS.items()}
    if n is not None:
        m = _mapping(n, ACTION_KEYS)
        actions.update(zip(m, gather(m.values(), lambda a: _action_spec(a, grace)), strict=True))
    return actions


_T = TypeVar("_T")


def _uid_range(n: Node) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(n.scalar()))
    lo, hi = (int(m.group(1)), int(m.group(2))) if m else (0, -1)
    if not (1000 <= lo <= hi < 2**31 - 1):
        raise n.error(f"{n.scalar()!r} is not a uid range of unused ids",
                      "give LOW-HIGH with 1000 <= LOW <= HIGH, e.g. \"61184-65519\" (systemd's DynamicUser range)")
    return lo, hi


PRIVILEGE_KEYS: KeyTable = {
    "no_new_privs": ("no_new_privs", Node.bool),
    "drop_capabilities": ("drop_capabilities", Node.bool),
    "seccomp": ("seccomp", Node.bool),
    "dynamic_user": ("dynamic_user", Node.bool),
    "dynamic_user_range": ("dynamic_user_range", _uid_range),
    "user_namespaces": ("user_namespaces", Node.bool),
}


def _privileges(n: Node) -> Privileges:
    return Privileges(**_read(_mapping(n, PRIVILEGE_KEYS), PRIVILEGE_KEYS))


def _parse(root: Node) -> Policy:
    """The policy; every section is read even after an error in another,
    and every entry of a list after an error in another (policy_yaml.gather),
    so one run reports every error (PolicyError.more)."""
    top = _mapping(root, TOP_KEYS)
    errors: list[PolicyError] = []

    def section(key: str, parse: Callable[[Node], _T], default: _T) -> _T:
        if key not in top:
            return default
        try:
            return parse(top[key])
        except PolicyError as e:
            errors.append(e)
            return default
    name = section("name", lambda n: n.str(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "policy name"), "unnamed")
    mode = section("mode", lambda n: n.choice(("enforce", "monitor")), "enforce")
    agents: tuple[AgentSelector, ...] = section("agents", _agents, ())
    budgets = section("budgets", _budgets, Budgets())
    gpu = section("gpu", _gpu, GpuPolicy())
    ex = section("exec", _exec, ExecPolicy())
    network = section("network", _network, NetworkPolicy())
    sockets = section("sockets", _sockets, SocketPolicy())
    grace = section("escalation", _escalation_grace, DEFAULT_GRACE_S)
    actions = section("actions", lambda n: _actions(n, grace), _actions(None, grace))
    privileges = section("privileges", _privileges, Privileges())
    policy = Policy(name=name, mode=mode, source=root.file, agents=agents, budgets=budgets, gpu=gpu, exec=ex,
                    network=network, sockets=sockets, actions=actions, escalation_grace_s=grace,
                    privileges=privileges)
    try:
        policy = dataclasses.replace(policy, rule_meta=read_rule_meta(top, policy))   # rule ids (issue 13)
    except PolicyError as e:
        errors.append(e)
    if errors:
        raise merged([x for e in errors for x in e.all()])
    _check_no_lockout(policy, top)
    return policy


def _own_programs() -> tuple[str, ...]:
    """Program names pycontain itself runs as (its interpreter and its entry point)."""
    exe = os.path.basename(sys.executable or "") or "python3"
    return tuple(dict.fromkeys((exe, "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}", "pycontain")))


def _own_paths() -> tuple[str, ...]:
    exe = sys.executable or "/usr/bin/python3"
    bindir = os.path.dirname(exe)
    return tuple(dict.fromkeys((exe, os.path.realpath(exe), os.path.join(bindir, "pycontain"),
                                "/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3",
                                "/usr/bin/pycontain", "/usr/local/bin/pycontain")))


def _lockout_target(glob: str) -> str | None:
    """The program or path of pycontain's own that an exec glob would match.
    Exec globs match case-insensitively on the basename, or on the whole path
    when they contain '/'."""
    targets = _own_paths() if "/" in glob else _own_programs()
    return next((t for t in targets if fnmatch.fnmatchcase(t.lower(), glob.lower())), None)


def _check_no_lockout(p: Policy, top: dict[str, Node]) -> None:
    """Reject policies that would stop pycontain itself from working: a
    `pycontain run` wrapper or the daemon's helpers may live inside a selected
    agent cgroup, so exec rules there must never hit the interpreter or
    `pycontain`."""
    own = _own_programs()
    ex = top.get("exec")
    exm = _mapping(ex, EXEC_KEYS) if ex is not None else {}
    for i, pat in enumerate(p.exec.deny):
        hit = _lockout_target(pat)
        if hit:
            raise exm["deny"].seq()[i].error(f"{pat!r} would match {hit!r}, which pycontain itself runs as",
                                             "narrow the glob; the controller and its helpers must be able to run")
    if p.exec.mode == "allow-list":
        for prog in own:
            if not any(fnmatch.fnmatchcase(prog.lower(), g.lower()) for g in p.exec.allow if "/" not in g) \
                    and not any(_lockout_target(g) for g in p.exec.allow if "/" in g):
                raise exm["allow"].error(f"the allow-list does not admit {prog!r}, which pycontain itself runs as",
                                         f"add {prog!r} (or a glob matching it) to exec.allow")
    for i, r in enumerate(p.network.deny):
        if r.ports or r.protocol != "any":
            continue            # a port-scoped loopback deny is a deliberate, narrow choice
        for c in r.cidrs:
            net = ipaddress.ip_network(c)
            if any(a in net for a in LOOPBACK_PROBES if a.version == net.version):
                raise _mapping(top["network"], NETWORK_KEYS)["deny"].seq()[i].error(
                    f"{c} denies all of loopback: pycontain's metrics endpoint (127.0.0.1), the local DNS stub "
                    "(127.0.0.53) and node-local services would be cut off",
                    "deny specific loopback ports instead, e.g. {cidr: 127.0.0.0/8, ports: [6379]}")
    b = p.budgets
    # (pids >= 8, cpu >= 0.01 and memory >= 16MiB are enforced where they are parsed)
    if b.memory_high_bytes is not None and b.memory_high_bytes < 16 << 20:
        node = _mapping(top["budgets"], BUDGET_KEYS)
        raise (node.get("memory_high") or node["memory"]).error(
            "a memory_high under 16MiB would throttle the agent before it starts")


def load_policy_text(text: str, source: str = "<string>") -> Policy:
    """A policy from its YAML text; `extends:` paths are relative to
    `source`'s directory (the working directory for a string)."""
    root = resolve(compose(text, source), _load_base, (_canonical(source),))
    policy = _parse(root)
    _check_capacity(policy, root)
    return policy


def _check_capacity(policy: Policy, root: Node) -> None:
    """Refuse a policy whose kernel tables would not fit the kernel maps
    (core/capacity.py), naming the first rule past the limit."""
    tables = compile_policy(policy)
    for o in table_overflows(tables):
        node = root.find(o.place or o.rule) or root
        items = node.find("cidrs") if o.entry else None
        if items is not None:
            node = next((i for i in items.seq() if _same_net(i, o.entry)), node)
        raise node.error(f"{o.rule}: {o.message()}" if o.place else o.message(), o.hint)


def _same_net(n: Node, net: str) -> bool:
    try:
        return str(ipaddress.ip_network(str(n.scalar()), strict=False)) == net
    except ValueError:
        return False


def load_policy(path: str) -> Policy:
    """A policy file; a built-in's name (default, strict) where no such file exists."""
    if path in builtins.NAMES and not os.path.exists(path):
        return builtin_policy(path)
    return load_policy_text(_read_text(path), path)


def builtin_policy(name: str) -> Policy:
    """A built-in policy by name: "default" (the ROME defaults) or "strict"."""
    return load_policy_text(builtins.text(name), f"<builtin:{name}>")


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise PolicyError(path, None, "", f"cannot read the policy: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise PolicyError(path, None, "", f"not UTF-8 text: {e.reason}") from None


def _canonical(source: str) -> str:
    return source if source.startswith("<") else os.path.realpath(source)


def _load_base(ref: Node, extending: str) -> tuple[Node, str]:
    """The tree `extends: X` names: a built-in by name, else a file relative
    to the extending file (its errors name that file)."""
    name = ref.str(maxlen=4096)
    if name in builtins.names():
        return compose(builtins.text(name), f"<builtin:{name}>"), f"<builtin:{name}>"
    if name.startswith("<") or not (name.endswith((".yaml", ".yml")) or "/" in name):
        raise ref.error(f"{name!r} is neither a built-in policy nor a policy file path",
                        "use extends: default, extends: strict or a path such as ./base.yaml")
    here = os.path.dirname(extending) if not extending.startswith("<") else ""
    path = os.path.normpath(os.path.join(here, name))
    try:
        text = _read_text(path)
    except PolicyError as e:
        raise ref.error(f"cannot read the base policy {path!r}: {e.problem}") from None
    return compose(text, path), _canonical(path)


def policy_to_dict(p: Policy) -> dict[str, Any]:
    """The effective policy, defaults merged, as data that loads back (JSON-like)."""
    def size(n: int | None) -> int | None:
        return n if n is None else int(n)

    def rule(r: NetRule, place: str) -> dict[str, Any]:
        d: dict[str, Any] = meta_fields(p, place)
        if r.cidrs:
            d["cidrs"] = list(r.cidrs)
        names = [h for h in r.hosts if h != NAMESERVERS]
        if names:
            d["hosts"] = names
        if NAMESERVERS in r.hosts:
            d["nameservers"] = True
        if r.ports:
            d["ports"] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in r.ports]
        d["protocol"] = r.protocol
        return d

    out: dict[str, Any] = {"name": p.name, "mode": p.mode}
    if p.agents:
        out["agents"] = [{k: v for k, v in dataclasses.asdict(a).items() if v is not None} for a in p.agents]
    bud = {k: v for k, v in (("cpu", p.budgets.cpu), ("memory", size(p.budgets.memory_bytes)),
                             ("memory_high", size(p.budgets.memory_high_bytes)), ("pids", p.budgets.pids))
           if v is not None}
    if bud:
        out["budgets"] = bud
    g = p.gpu
    gpu = {"required": g.required, "correlate_unapproved_connect": g.correlate_unapproved_connect,
           "throttle": {"duty_cycle": g.throttle_duty_cycle, "period": g.throttle_period_s},
           "sample_interval": g.sample_interval_s}
    if g.memory_bytes is not None:
        gpu["memory"] = g.memory_bytes
    if g.sm_util_max is not None:
        gpu["sm_util"] = {"max": g.sm_util_max, "window": g.sm_util_window_s}
    if g.allowed_programs:
        gpu["allowed_programs"] = list(g.allowed_programs)
    gpu.update(gpu_extras_dict(g))
    out["gpu"] = gpu
    def globs(section: str, items: tuple[str, ...]) -> list[Any]:
        return [dict(name=g, **m) if (m := meta_fields(p, f"{section}[{i}]")) else g for i, g in enumerate(items)]
    ex: dict[str, Any] = {"mode": p.exec.mode, "allow": list(p.exec.allow), "deny": globs("exec.deny", p.exec.deny),
                          "deny_args": globs("exec.deny_args", p.exec.deny_args)}
    if p.exec.deny_program_args:
        ex["deny_program_args"] = [{"program": prog, "args": [a], **meta_fields(p, f"exec.deny_program_args[{i}]")}
                                   for i, (prog, a) in enumerate(p.exec.deny_program_args)]
    if p.exec.trusted:
        ex["trusted"] = {"paths": list(p.exec.trusted)}
    ex.update(truncated_args=p.exec.truncated_args, fileless=p.exec.fileless)
    out["exec"] = ex
    out["network"] = {"default": p.network.default,
                      "allow": [rule(r, f"network.allow[{i}]") for i, r in enumerate(p.network.allow)],
                      "deny": [rule(r, f"network.deny[{i}]") for i, r in enumerate(p.network.deny)],
                      "deny_internal": p.network.deny_internal, "deny_metadata": p.network.deny_metadata,
                      "detect": list(p.network.detect),
                      "resolve_interval": p.network.resolve_interval_s}
    out["network"]["local_services"] = "any" if p.network.local_services == ("any",) \
        else list(p.network.local_services)
    out["sockets"] = {"deny_raw": p.sockets.deny_raw, "deny_packet": p.sockets.deny_packet,
                      "deny_other_families": p.sockets.deny_other_families}
    out["actions"] = {k: {"ladder": [a.value for a in s.ladder], "grace": s.grace_s} for k, s in p.actions.items()}
    out["escalation"] = {"grace": p.escalation_grace_s}
    out["privileges"] = privileges_to_dict(p.privileges)
    return out


def privileges_to_dict(pv: Privileges) -> dict[str, Any]:
    """`privileges:` as YAML (policy show) and as the daemon's start answer."""
    return {"no_new_privs": pv.no_new_privs, "drop_capabilities": pv.drop_capabilities,
            "seccomp": pv.seccomp, "dynamic_user": pv.dynamic_user,
            "dynamic_user_range": f"{pv.dynamic_user_range[0]}-{pv.dynamic_user_range[1]}",
            "user_namespaces": pv.user_namespaces}


def privileges_from_dict(data: Any, source: str = "<daemon answer>") -> Privileges:
    """The inverse of privileges_to_dict, checked like the policy's own
    section (JSON is YAML); None: the defaults, every measure taken."""
    if data is None:
        return Privileges()
    return _privileges(compose(json.dumps(data), source))
