"""Policy → contents of the kernel's deny maps (pure).

The controller writes a :class:`KernelTables` into the BPF maps declared in
ebpf/pycontain.h. Rule id 0 means "no rule"; ids index ``rules`` so user space
can name the rule a kernel verdict came from.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cgroup_glob import compile_selectors
from .events import MAX_PATTERNS, PATTERN_LEN, ConfigFlag, Event, Mode, PatternWhere
from .policy import INTERNAL_RANGES, METADATA_RANGES, ExecPolicy, NetRule, NetworkPolicy, Policy


@dataclass
class KernelTables:
    mode: Mode = Mode.ENFORCE
    flags: ConfigFlag = ConfigFlag(0)
    rules: dict[int, str] = field(default_factory=dict)            # rule id -> rule name, ids from 1
    ports: dict[int, tuple[int, int]] = field(default_factory=dict)  # port -> (tcp rule id, udp rule id)
    deny4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    allow4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    deny6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    allow6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    exec_names: dict[str, int] = field(default_factory=dict)       # lower-cased basename -> rule id
    # (lower-cased substring of at most PATTERN_LEN bytes, where, rule id); at most MAX_PATTERNS
    exec_patterns: list[tuple[str, PatternWhere, int]] = field(default_factory=list)
    local_rule: int = 0                    # issue 10: rule id of network.local_services
    local_services: tuple[str, ...] = ()   # as in the policy (core/local_services.py)


# ---- policy -> tables ------------------------------------------------------------

RESERVED = {1: "network.default", 2: "network.stratum", 3: "network.raw_socket", 4: "network.packet_socket"}
DEFAULT_DENY_RULE_ID = 1
NAME_MAX = 63
_GLOB_CHARS = set("*?[")


def _plain(s: str) -> bool:
    return not (set(s) & _GLOB_CHARS)


def exec_kernel_form(glob: str, args: bool = False) -> tuple[str, str] | None:
    """How the kernel can enforce an exec/args glob exactly, if at all:
    ("name", x) for an exact basename, ("substr", x) for "*x*"; None = user space.
    A '/' makes an exec.deny glob a path glob (user space); in deny_args it is
    just a character."""
    if "/" in glob and not args:
        return None
    if _plain(glob) and 0 < len(glob.encode()) <= NAME_MAX:
        return ("name", glob.lower())
    if len(glob) > 2 and glob[0] == "*" and glob[-1] == "*" and _plain(glob[1:-1]) \
            and len(glob[1:-1].encode()) <= PATTERN_LEN:
        return ("substr", glob[1:-1].lower())
    return None


def compile_policy(policy: Policy, resolved: Mapping[str, list[str]] | None = None) -> KernelTables:
    """Everything of the policy the kernel can enforce exactly. The rest is
    evaluated by the engine in user space (see compile_report)."""
    t = KernelTables(mode=Mode.MONITOR if policy.mode == "monitor" else Mode.ENFORCE,
                     flags=_config_flags(policy))
    t.rules = dict(RESERVED)
    rule = _RuleIds(t.rules)
    # rule ids are handed out in this order: exec first, then network
    _compile_exec(t, policy.exec, rule)
    _compile_network(t, policy.network, resolved or {}, rule)
    _compile_local(t, policy, rule)
    return t


def _compile_local(t: KernelTables, policy: Policy, rule: _RuleIds) -> None:
    """Issue 10: loopback and unix destinations are the agent's own, listed or resolvers."""
    if policy.network.local_services == ("any",):
        return
    t.flags |= ConfigFlag.LOCAL_GUARD
    t.local_rule = rule("network.local_services")
    t.local_services = policy.network.local_services


class _RuleIds:
    """Hands out rule ids after the reserved ones, naming each in ``rules``."""

    def __init__(self, rules: dict[int, str]):
        self.rules = rules
        self.next_id = len(RESERVED) + 1

    def __call__(self, name: str) -> int:
        rid = self.next_id
        self.next_id += 1
        self.rules[rid] = name
        return rid


def _config_flags(policy: Policy) -> ConfigFlag:
    """Switches of the kernel programs: network default, socket denies, stratum detection."""
    flags = ConfigFlag(0)
    if policy.network.default == "deny":
        flags |= ConfigFlag.NET_DEFAULT_DENY
    if policy.sockets.deny_raw:
        flags |= ConfigFlag.DENY_RAW
    if policy.sockets.deny_packet:
        flags |= ConfigFlag.DENY_PACKET
    if "stratum" in policy.network.detect:
        flags |= ConfigFlag.DETECT_STRATUM
    return flags


def _compile_exec(t: KernelTables, ex: ExecPolicy, rule: _RuleIds) -> None:
    """exec.deny names and *substr* globs, exec.deny_args *substr* globs;
    patterns only while the kernel's pattern table has room."""
    for i, g in enumerate(ex.deny):
        form = exec_kernel_form(g)
        if form and (form[0] == "name" or len(t.exec_patterns) < MAX_PATTERNS):
            rid = rule(f"exec.deny[{i}]")
            if form[0] == "name":
                t.exec_names[form[1]] = rid
            else:
                t.exec_patterns.append((form[1], PatternWhere.BASENAME, rid))
    for i, g in enumerate(ex.deny_args):
        form = exec_kernel_form(g, args=True)
        if form and form[0] == "substr" and len(t.exec_patterns) < MAX_PATTERNS:
            t.exec_patterns.append((form[1], PatternWhere.ARGS, rule(f"exec.deny_args[{i}]")))


def _add_nets(dst4: list[tuple[ipaddress.IPv4Network, int]], dst6: list[tuple[ipaddress.IPv6Network, int]],
              nets: Iterable[str], rid: int) -> None:
    for n in nets:
        net = ipaddress.ip_network(n, strict=False)
        if isinstance(net, ipaddress.IPv4Network):   # net.version == 4
            dst4.append((net, rid))
        else:
            dst6.append((net, rid))


def _rule_addrs(r: NetRule, resolved: Mapping[str, list[str]]) -> list[str]:
    """A rule's CIDRs plus the current addresses of its host names."""
    out = list(r.cidrs)
    for h in r.hosts:
        out += [f"{a}/{32 if ':' not in a else 128}" for a in resolved.get(h, [])]
    return out


def _compile_network(t: KernelTables, nw: NetworkPolicy, resolved: Mapping[str, list[str]], rule: _RuleIds) -> None:
    """Port-only and address-only deny rules, the internal/metadata ranges,
    and under ``default: deny`` the addresses of the allow entries."""
    for i, r in enumerate(nw.deny):
        if r.ports and not r.cidrs and not r.hosts:
            _deny_ports(t, r, rule(f"network.deny[{i}]"))
        elif not r.ports and r.protocol == "any":
            _add_nets(t.deny4, t.deny6, _rule_addrs(r, resolved), rule(f"network.deny[{i}]"))
        # address+port or protocol-specific address rules: user space (engine)
    if nw.deny_internal:
        _add_nets(t.deny4, t.deny6, INTERNAL_RANGES, rule("network.deny_internal"))
    if nw.deny_metadata:
        _add_nets(t.deny4, t.deny6, METADATA_RANGES, rule("network.deny_metadata"))
    if nw.default == "deny":
        for i, r in enumerate(nw.allow):
            # the kernel allows the address; a port/protocol restriction on it is
            # checked by the engine (user space)
            _add_nets(t.allow4, t.allow6, _rule_addrs(r, resolved), rule(f"network.allow[{i}]"))


def _deny_ports(t: KernelTables, r: NetRule, rid: int) -> None:
    """A port-only deny rule: every port of its ranges, for its protocol(s)."""
    for lo, hi in r.ports:
        for port in range(lo, hi + 1):
            tcp, udp = t.ports.get(port, (0, 0))
            t.ports[port] = (rid if r.protocol in ("tcp", "any") else tcp,
                             rid if r.protocol in ("udp", "any") else udp)


def compile_report(policy: Policy, resolved: Mapping[str, list[str]] | None = None) -> list[str]:
    """One line per rule: enforced in the kernel (before the program runs /
    EPERM), or in user space (the engine kills the process right after)."""
    out: list[str] = []
    tables = compile_policy(policy, resolved)
    names = set(tables.rules.values())
    kern_exec, user_exec = "kernel (killed before it runs)", "user space (killed right after exec)"
    if policy.exec.mode == "allow-list":
        out.append(f"exec.allow {list(policy.exec.allow)!r}: {user_exec}: the kernel maps hold deny entries only")
    for i, g in enumerate(policy.exec.deny):
        k = f"exec.deny[{i}]"
        out.append(f"{k} {g!r}: " + (kern_exec if k in names else user_exec))
    for i, g in enumerate(policy.exec.deny_args):
        k = f"exec.deny_args[{i}]"
        out.append(f"{k} {g!r}: " + (kern_exec if k in names else user_exec))
    for i, (prog, a) in enumerate(policy.exec.deny_program_args):
        out.append(f"exec.deny_program_args[{i}] {prog} {a!r}: {user_exec}")
    for i, _r in enumerate(policy.network.deny):
        k = f"network.deny[{i}]"
        out.append(f"{k}: " + ("kernel (EPERM)" if k in names else "user space (violation, kill-process)"))
    if policy.network.default == "deny":
        out.append("network.default deny: kernel (EPERM unless an allow entry covers the address)")
        for i, r in enumerate(policy.network.allow):
            limits = r.ports or r.protocol != "any"
            where = "kernel (address)" + (" + user space (ports/protocol: kill-process)" if limits else "")
            out.append(f"network.allow[{i}]: {where}")
    if policy.network.deny_internal:
        out.append("network.deny_internal: kernel (EPERM)")
    if policy.network.deny_metadata:
        out.append("network.deny_metadata: kernel (EPERM)")
    if policy.sockets.deny_raw:
        out.append("network.raw_socket: kernel (EPERM)")
    if policy.sockets.deny_packet:
        out.append("network.packet_socket: kernel (EPERM)")
    if "stratum" in policy.network.detect:
        out.append("network.stratum: kernel (packet dropped) + the policy's stratum action")
    return out + selector_report(policy) + local_services_report(policy)


def selector_report(policy: Policy) -> list[str]:
    """Issue 10: which agent selectors the kernel matches at cgroup birth and which the scan finds."""
    auto = compile_selectors(policy.agents)
    out = []
    for i, sel in enumerate(policy.agents):
        what = next(f"{k} {v!r}" for k, v in (("cgroup", sel.cgroup), ("systemd_unit", sel.systemd_unit),
                                                 ("command", sel.command)) if v is not None)
        where = ("kernel (marked at cgroup birth)" if i in auto.kernel
                 else f"scan (every scan interval: {auto.scan.get(i, 'not a cgroup property')})")
        out.append(f"agents[{i}] {sel.name} {what}: {where}")
    return out


def local_services_report(policy: Policy) -> list[str]:
    """Issue 10: what an agent may reach on this node besides its own sockets."""
    listed = policy.network.local_services
    if listed == ("any",):
        return ["network.local_services any: off (agents may reach every loopback and unix service)"]
    out = ["network.local_services: kernel (EPERM): loopback and unix services the agent did not start, "
           "except the node's resolvers and:"]
    out += [f"  {s}" for s in listed] or ["  (none listed)"]
    return out


def _text(v: str | bytes | bytearray) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, (bytes, bytearray)) else str(v)


def exec_verdict(tables: KernelTables, filename: str | bytes, argv: Sequence[str | bytes] = ()) -> int:
    """Python emulation of the kernel's exec matching (ebpf/exec.c): the rule
    id the kernel would kill an exec of `filename` with `argv` with, or 0."""
    base = _text(filename).rsplit("/", 1)[-1].lower()
    if base in tables.exec_names:
        return tables.exec_names[base]
    blob = "\0".join(_text(a) for a in argv).lower()
    for pat, where, rid in tables.exec_patterns:
        if (where == PatternWhere.BASENAME and pat in base) or (where == PatternWhere.ARGS and pat in blob):
            return rid
    return 0


def net_verdict(tables: KernelTables, daddr: str, dport: int, protocol: str = "tcp") -> int:
    """Python emulation of the kernel's connect/send matching: the rule id the
    kernel would refuse a `protocol` ("tcp"/"udp") packet or connection to
    `daddr`:`dport` with (EPERM), or 0."""
    tcp, udp = tables.ports.get(int(dport), (0, 0))
    rid = tcp if protocol == "tcp" else udp
    if rid:
        return rid
    try:
        addr = ipaddress.ip_address(daddr)
    except ValueError:
        return 0
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped

    def longest(entries: Sequence[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]]) -> int:
        best: tuple[int, int] | None = None
        for net, r in entries:
            if addr in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, r)
        return best[1] if best else 0
    deny = longest(tables.deny4 if addr.version == 4 else tables.deny6)
    if deny:
        return deny
    if tables.flags & ConfigFlag.NET_DEFAULT_DENY \
            and not longest(tables.allow4 if addr.version == 4 else tables.allow6):
        return DEFAULT_DENY_RULE_ID
    return 0


def kernel_verdict(tables: KernelTables, ev: Event | Mapping[str, Any]) -> int:
    """The rule id the kernel would deny an exec/connect/send with, or 0, for
    an event (ExecEvent/NetEvent) or an audit-record dict. Other kinds: 0.
    Used by replay and tests; see exec_verdict and net_verdict."""
    if isinstance(ev, Mapping):
        kind = str(ev.get("kind", ""))
        if kind == "exec":
            return exec_verdict(tables, ev.get("filename", ""), ev.get("argv") or ())
        if kind in ("connect", "send"):
            return net_verdict(tables, ev.get("daddr", ""), int(ev.get("dport") or 0), ev.get("protocol", "tcp"))
        return 0
    if ev.kind == "exec":
        return exec_verdict(tables, getattr(ev, "filename", b""), getattr(ev, "argv", ()))
    if ev.kind in ("connect", "send"):
        return net_verdict(tables, getattr(ev, "daddr", ""), getattr(ev, "dport", 0), getattr(ev, "proto_name", "tcp"))
    return 0
