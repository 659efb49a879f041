"""Policy → contents of the kernel's deny maps (pure).

The controller writes a :class:`KernelTables` into the BPF maps declared in
ebpf/pycontain.h. Rule id 0 means "no rule"; ids index ``rules`` so user space
can name the rule a kernel verdict came from.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .cgroup_glob import compile_selectors
from .events import (
    MAX_PATTERNS,
    PATTERN_LEN,
    RULE_FILELESS,
    RULE_HOLD,
    RULE_UNTRUSTED,
    ConfigFlag,
    Event,
    ExeIdentity,
    Mode,
    PatternWhere,
)
from .net_ranges import INTERNAL_RANGES, METADATA_RANGES
from .policy_args import MULTI_CALL
from .resolve import NAMESERVERS
from .rule_ids import rule_id

if TYPE_CHECKING:
    from .policy import ExecPolicy, NetRule, NetworkPolicy, Policy

_Net: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AddrRule:
    """One address+port rule the kernel applies (pc_addr_rules entry):
    ``kind`` deny | allow | pass (allow that beats deny_internal/metadata:
    the node's resolvers), ``protocol`` tcp | udp | any, ``ports`` inclusive
    ranges (empty: every port; with protocol any, every protocol), ``nets``
    the networks it covers."""

    kind: str
    rule: int
    protocol: str = "any"
    ports: tuple[tuple[int, int], ...] = ()
    nets: tuple[_Net, ...] = ()

    def covers(self, proto: str, port: int) -> bool:
        if self.protocol != "any" and self.protocol != proto:
            return False
        if not self.ports:
            return True
        return proto in ("tcp", "udp") and any(lo <= port <= hi for lo, hi in self.ports)


@dataclass
class KernelTables:
    mode: Mode = Mode.ENFORCE
    flags: ConfigFlag = ConfigFlag(0)
    rules: dict[int, str] = field(default_factory=dict)            # rule id -> rule name, ids from 1
    places: dict[int, str] = field(default_factory=dict)           # rule id -> place in the policy (exec.deny[3])
    ports: dict[int, tuple[int, int]] = field(default_factory=dict)  # port -> (tcp rule id, udp rule id)
    deny4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    allow4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    deny6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    allow6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    exec_names: dict[str, int] = field(default_factory=dict)       # lower-cased basename -> rule id
    # (lower-cased substring of at most PATTERN_LEN bytes, where, rule id); at most MAX_PATTERNS
    exec_patterns: list[tuple[str, PatternWhere, int]] = field(default_factory=list)
    # address+port rules (issue 12), at most ADDR_RULES entries
    addr_rules: list[AddrRule] = field(default_factory=list)
    source: str = "<builtin>"      # the policy file, for errors
    # issue 11: exec.trusted real-path prefixes (the loader writes their (dev, inode))
    trusted_paths: tuple[str, ...] = ()
    # issue 12: (max_hosts, max_ports, window ns) of scan detection (0 window: off)
    scan_limits: tuple[int, int, int] = (0, 0, 0)
    # issue 12: where SSH sessions may go (network.ssh.allow), rule id = the entry's index + 1
    ssh_allow4: list[tuple[ipaddress.IPv4Network, int]] = field(default_factory=list)
    ssh_allow6: list[tuple[ipaddress.IPv6Network, int]] = field(default_factory=list)
    local_rule: int = 0                    # issue 10: rule id of network.local_services
    local_services: tuple[str, ...] = ()   # as in the policy (core/local_services.py)
    # held when the argv is at least this many bytes (0: never): an argument
    # glob with no literal the automaton can look for (the Monero wallet glob)
    hold_args_min: int = 0


# ---- policy -> tables ------------------------------------------------------------

RESERVED = {1: "network.default", 2: "network.stratum", 3: "network.raw_socket", 4: "network.packet_socket"}
DEFAULT_DENY_RULE_ID = 1
NAME_MAX = 63
_GLOB_CHARS = set("*?[")


def _plain(s: str) -> bool:
    return not (set(s) & _GLOB_CHARS)


# rule ids of the kernel's own exec checks (issue 11), named like policy rules
EXEC_CHECK_RULES = {RULE_HOLD: "exec.hold", RULE_FILELESS: "exec.fileless", RULE_UNTRUSTED: "exec.trusted"}
PREFILTER_MIN = 3      # shortest literal worth holding on: shorter ones would hold nearly every exec


def exec_kernel_form(glob: str, args: bool = False) -> tuple[str, str] | None:
    """How the kernel can enforce an exec/args glob exactly, if at all:
    ("name", x) for an exact basename, ("substr", x) for "*x*", ("prefix",
    "/x") for a basename glob "x*" (the kernel feeds a '/' before each name);
    None = user space. A '/' makes an exec.deny glob a path glob (user space);
    in deny_args it is just a character."""
    if "/" in glob and not args:
        return None
    if _plain(glob) and 0 < len(glob.encode()) <= NAME_MAX:
        return ("name", glob.lower())
    if len(glob) > 2 and glob[0] == "*" and glob[-1] == "*" and _plain(glob[1:-1]) \
            and len(glob[1:-1].encode()) <= PATTERN_LEN:
        return ("substr", glob[1:-1].lower())
    if not args and len(glob) > 1 and glob[-1] == "*" and _plain(glob[:-1]) \
            and len(glob[:-1].encode()) + 1 <= PATTERN_LEN:
        return ("prefix", "/" + glob[:-1].lower())
    return None


def glob_min_len(glob: str) -> int:
    """The fewest bytes a whole argument matching `glob` has: each literal
    byte, `?` and `[...]` class counts one, `*` none."""
    n, i = 0, 0
    while i < len(glob):
        if glob[i] == "[":
            close = glob.find("]", i + 2)
            i = close if close > 0 else len(glob)
        if glob[i:i + 1] != "*":
            n += 1
        i += 1
    return n


def glob_literal(glob: str, args: bool = False) -> str | None:
    """A lower-case substring every match of `glob` contains, for the kernel's
    hold filter (issue 11): "/x" for a leading literal of a basename glob,
    else the longest literal run (at least PREFILTER_MIN bytes), cut to
    PATTERN_LEN; None when the glob has none (or is a path glob)."""
    if "/" in glob and not args:
        return None
    runs, cur, i = [], "", 0
    while i < len(glob):
        c = glob[i]
        if c in "*?[":
            runs.append(cur)
            cur = ""
            if c == "[":
                close = glob.find("]", i + 2)
                i = close if close > 0 else len(glob)
        else:
            cur += c
        i += 1
    runs.append(cur)
    if not args and runs[0] and len(runs[0]) + 1 >= PREFILTER_MIN:
        return ("/" + runs[0].lower())[:PATTERN_LEN]
    best = max(runs, key=len)
    return best.lower()[:PATTERN_LEN] if len(best) >= PREFILTER_MIN else None


def compile_policy(policy: Policy, resolved: Mapping[str, list[str]] | None = None) -> KernelTables:
    """Everything of the policy the kernel can enforce exactly. The rest is
    evaluated by the engine in user space (see compile_report)."""
    t = KernelTables(mode=Mode.MONITOR if policy.mode == "monitor" else Mode.ENFORCE,
                     flags=_config_flags(policy), source=policy.source)
    t.rules = dict(RESERVED)
    t.places = dict(RESERVED)
    rule = _RuleIds(t, policy)
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
    """Hands out rule ids after the reserved ones for rules given by their
    place in the policy, naming each by its stable id (core/rule_ids.py)
    in ``rules`` and keeping its place in ``places``."""

    def __init__(self, t: KernelTables, policy: Policy):
        self.t = t
        self.policy = policy
        self.next_id = len(RESERVED) + 1

    def __call__(self, place: str) -> int:
        rid = self.next_id
        self.next_id += 1
        self.t.rules[rid] = rule_id(self.policy, place)
        self.t.places[rid] = place
        return rid


def kernel_exec_places(policy: Policy) -> set[str]:
    """The places of the exec rules the kernel enforces (the rest is the
    engine's), decided exactly as compile_policy does."""
    t = KernelTables()
    _compile_exec(t, policy.exec, _RuleIds(t, policy))
    return set(t.places.values())


def _config_flags(policy: Policy) -> ConfigFlag:
    """Switches of the kernel programs: network default, socket denies, stratum
    detection; fileless and trusted exec checks (issue 11)."""
    flags = ConfigFlag(0)
    if policy.exec.fileless == "deny":
        flags |= ConfigFlag.EXEC_FILELESS_DENY
    if policy.exec.trusted:
        flags |= ConfigFlag.EXEC_TRUSTED
    if policy.network.default == "deny":
        flags |= ConfigFlag.NET_DEFAULT_DENY
    if policy.sockets.deny_raw:
        flags |= ConfigFlag.DENY_RAW
    if policy.sockets.deny_packet:
        flags |= ConfigFlag.DENY_PACKET
    if policy.sockets.deny_other_families:
        flags |= ConfigFlag.DENY_FAMILY
    if "stratum" in policy.network.detect:
        flags |= ConfigFlag.DETECT_STRATUM
    return flags | _issue12_flags(policy)


def _issue12_flags(policy: Policy) -> ConfigFlag:
    """Scan detection, SSH destinations, inbound and reverse shells (issue 12).
    SSH is always judged: sessions go only where network.ssh.allow says."""
    flags = ConfigFlag.SSH
    nw = policy.network
    if nw.scan.enabled:
        flags |= ConfigFlag.SCAN
    flags |= {"loopback": ConfigFlag.INBOUND_LOOPBACK, "deny": ConfigFlag.INBOUND_DENY}.get(nw.inbound,
                                                                                          ConfigFlag(0))
    if policy.exec.stdio_socket == "kill-process":
        flags |= ConfigFlag.STDIO_SOCKET
    return flags


def _compile_exec(t: KernelTables, ex: ExecPolicy, rule: _RuleIds) -> None:
    """exec.deny names, *substr* and prefix* globs, exec.deny_args *substr*
    globs (patterns only while the kernel's pattern table has room); then the
    hold filter for every rule left to user space (_compile_holds)."""
    user: list[str] = []
    for i, g in enumerate(ex.deny):
        form = exec_kernel_form(g)
        if form and (form[0] == "name" or len(t.exec_patterns) < MAX_PATTERNS):
            rid = rule(f"exec.deny[{i}]")
            if form[0] == "name":
                t.exec_names[form[1]] = rid
            else:
                t.exec_patterns.append((form[1], PatternWhere.BASENAME, rid))
        else:
            user.append(g)
    user_args: list[str] = []
    for i, g in enumerate(ex.deny_args):
        form = exec_kernel_form(g, args=True)
        if form and form[0] == "substr" and len(t.exec_patterns) < MAX_PATTERNS:
            t.exec_patterns.append((form[1], PatternWhere.ARGS, rule(f"exec.deny_args[{i}]")))
        else:
            user_args.append(g)
    _compile_holds(t, ex, user, user_args)
    t.trusted_paths = ex.trusted
    t.rules.update(EXEC_CHECK_RULES)


def _compile_holds(t: KernelTables, ex: ExecPolicy, user: list[str], user_args: list[str]) -> None:
    """The kernel-side filter of execs whose verdict needs user space (issue
    11): such an exec is held stopped until the controller decides. Programs
    with program-scoped argument rules (and multi-call binaries that may be
    them) are held by name; user-space name and argument globs by a literal
    every match contains. A rule with no such literal, an allow-list, or a
    full pattern table hold every exec (fail closed)."""
    hold_all = ex.mode == "allow-list"
    names: list[str] = list(user)
    if ex.deny_program_args:
        names += sorted({prog for prog, _a in ex.deny_program_args}) + list(MULTI_CALL)
    pats: list[tuple[str, PatternWhere]] = []
    for g in names:
        form = exec_kernel_form(g)
        if form and form[0] == "name":
            t.exec_names.setdefault(form[1], RULE_HOLD)     # a deny of the same name wins
            continue
        lit = form[1] if form else glob_literal(g)
        if lit is None:
            hold_all = True
        else:
            pats.append((lit, PatternWhere.BASENAME))
    for g in user_args:
        lit = glob_literal(g, args=True)
        if lit is not None:
            pats.append((lit, PatternWhere.ARGS))
        else:                   # no literal: held when an argument is that long, never judged after the exec
            n = max(glob_min_len(g), 1)
            t.hold_args_min = min(t.hold_args_min or n, n)
    for lit, where in dict.fromkeys(pats):
        if len(t.exec_patterns) >= MAX_PATTERNS:
            hold_all = True
            break
        t.exec_patterns.append((lit, where, RULE_HOLD))
    if hold_all:
        t.flags |= ConfigFlag.EXEC_HOLD_ALL


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
    """Port-only deny rules (port table), address-only deny rules and the
    internal/metadata ranges (deny tries), address+port or protocol-specific
    rules (address rule table); under ``default: deny`` the allow entries
    (allow trie when they name no port or protocol, else the rule table).
    Allow entries with ``nameservers`` always go to the rule table as
    ``pass``: the node's resolvers stay reachable under deny_internal."""
    for i, r in enumerate(nw.deny):
        rid = rule(f"network.deny[{i}]")
        if r.ports and not r.cidrs and not r.hosts:
            _deny_ports(t, r, rid)
        elif not r.ports and r.protocol == "any":
            _add_nets(t.deny4, t.deny6, _rule_addrs(r, resolved), rid)
        else:
            _add_addr_rule(t, "deny", rid, r, resolved)
    if nw.deny_internal:
        _add_nets(t.deny4, t.deny6, INTERNAL_RANGES, rule("network.deny_internal"))
    if nw.deny_metadata:
        _add_nets(t.deny4, t.deny6, METADATA_RANGES, rule("network.deny_metadata"))
    for i, r in enumerate(nw.allow):
        if nw.default != "deny" and NAMESERVERS not in r.hosts:
            continue
        rid = rule(f"network.allow[{i}]")
        if nw.default == "deny":
            # the addresses, as before; limited entries are judged by the
            # address rule table instead (limited_allow_ids: not in the trie)
            _add_nets(t.allow4, t.allow6, _rule_addrs(r, resolved), rid)
        if NAMESERVERS in r.hosts:
            _add_addr_rule(t, "pass", rid, r, resolved)
        elif r.ports or r.protocol != "any":
            _add_addr_rule(t, "allow", rid, r, resolved)
    rule("network.source_route")
    _compile_issue12(t, nw, resolved, rule)


def _compile_issue12(t: KernelTables, nw: NetworkPolicy, resolved: Mapping[str, list[str]], rule: _RuleIds) -> None:
    """Rule names of the issue-12 verdicts, scan limits, SSH destinations."""
    for name in ("network.scan", "network.ssh", "network.inbound", "exec.stdio_socket", "network.socket_family"):
        rule(name)
    sc = nw.scan
    if sc.enabled:
        t.scan_limits = (sc.max_hosts, sc.max_ports, int(sc.window_s * 1e9))
    for i, r in enumerate(nw.ssh_allow):
        _add_nets(t.ssh_allow4, t.ssh_allow6, _rule_addrs(r, resolved), i + 1)


def _add_addr_rule(t: KernelTables, kind: str, rid: int, r: NetRule, resolved: Mapping[str, list[str]]) -> None:
    """One rule of the kernel's address rule table. A rule without addresses
    covers every address. Past ADDR_RULES rules the policy does not fit
    (core/capacity.py refuses it): no network rule is left to a user-space kill."""
    addrs = _rule_addrs(r, resolved) if (r.cidrs or r.hosts) else ["0.0.0.0/0", "::/0"]
    nets = tuple(ipaddress.ip_network(a, strict=False) for a in addrs)
    t.addr_rules.append(AddrRule(kind, rid, r.protocol, r.ports, nets))


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
    names = set(tables.places.values())
    kern_exec, user_exec = "kernel (killed before it runs)", "user space (killed right after exec)"
    if policy.exec.mode == "allow-list":
        out.append(f"exec.allow {list(policy.exec.allow)!r}: {user_exec}: the kernel maps hold deny entries only")
    for i, g in enumerate(policy.exec.deny):
        k = f"exec.deny[{i}]"
        out.append(f"{rule_id(policy, k)} ({k}) {g!r}: " + (kern_exec if k in names else user_exec))
    for i, g in enumerate(policy.exec.deny_args):
        k = f"exec.deny_args[{i}]"
        out.append(f"{rule_id(policy, k)} ({k}) {g!r}: " + (kern_exec if k in names else user_exec))
    for i, (prog, a) in enumerate(policy.exec.deny_program_args):
        k = f"exec.deny_program_args[{i}]"
        out.append(f"{rule_id(policy, k)} ({k}) {prog} {a!r}: {user_exec}")
    for i, _r in enumerate(policy.network.deny):
        k = f"network.deny[{i}]"
        out.append(f"{rule_id(policy, k)} ({k}): " + ("kernel (EPERM, every packet dropped)" if k in names
                                                      else "user space (violation, kill-process)"))
    if policy.network.default == "deny":
        out.append("network.default deny: kernel (EPERM and every packet dropped unless an allow entry covers "
                   "the address, protocol and port)")
        for i, _r in enumerate(policy.network.allow):
            k = f"network.allow[{i}]"
            out.append(f"{rule_id(policy, k)} ({k}): kernel (address, protocol and ports)")
    if policy.network.deny_internal:
        out.append("network.deny_internal: kernel (EPERM)")
    if policy.network.deny_metadata:
        out.append("network.deny_metadata: kernel (EPERM)")
    if policy.sockets.deny_raw:
        out.append("network.raw_socket: kernel (EPERM)")
    if policy.sockets.deny_packet:
        out.append("network.packet_socket: kernel (EPERM)")
    if policy.sockets.deny_other_families:
        out.append("network.socket_family: kernel (killed at socket())")
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


def _arg_bytes(v: str | bytes | bytearray) -> int:
    return len(v) if isinstance(v, (bytes, bytearray)) else len(str(v).encode("utf-8", "surrogateescape"))


def exec_verdict(tables: KernelTables, filename: str | bytes, argv: Sequence[str | bytes] = (),
                 exe_name: str | bytes | None = None) -> int:
    """Python emulation of the kernel's exec matching (ebpf/exec.c): the rule
    id the kernel would kill an exec of `filename` with `argv` with (the
    name passed and, when given, the name of the file that runs), or 0.
    Hold patterns (RULE_HOLD) never deny: see exec_holds."""
    names = [_text(filename).rsplit("/", 1)[-1].lower()]
    if exe_name:
        names.append(_text(exe_name).lower())
    blob = "\0".join(_text(a) for a in argv).lower()
    for base in names:
        rid = tables.exec_names.get(base, 0)
        if rid and rid != RULE_HOLD:
            return rid
    for pat, where, rid in tables.exec_patterns:
        if rid == RULE_HOLD:
            continue
        if (where == PatternWhere.BASENAME and any(pat in "/" + b for b in names)) \
                or (where == PatternWhere.ARGS and pat in blob):
            return rid
    return 0


_Addr: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK4 = ipaddress.IPv4Address("127.0.0.1")
LOOPBACK6 = ipaddress.IPv6Address("::1")


def canonical_destinations(daddr: str, via_lo: bool = False) -> tuple[list[_Addr], bool]:
    """The addresses the kernel judges a destination as (ebpf/net.bpf.h
    pc_net_judge), and whether it is loopback: ::ffff:a.b.c.d is a.b.c.d;
    ::a.b.c.d (v4-compatible) is itself and a.b.c.d; the unspecified
    address, 127.0.0.0/8, ::1 (and a packet through lo) are themselves plus
    127.0.0.1 and ::1. Empty for a string that is no address."""
    try:
        addr: _Addr = ipaddress.ip_address(daddr)
    except ValueError:
        return [], False
    out: list[_Addr] = []
    loop = via_lo
    if isinstance(addr, ipaddress.IPv6Address):
        w = addr.packed
        if addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        elif w[:12] == bytes(12) and int.from_bytes(w[12:], "big") <= 1:
            loop = True
            out.append(addr)
        else:
            out.append(addr)
            if w[:12] == bytes(12):
                addr = ipaddress.IPv4Address(w[12:])
    if isinstance(addr, ipaddress.IPv4Address):
        loop = loop or addr in ipaddress.IPv4Network("127.0.0.0/8") or int(addr) == 0
        out.append(addr)
    if loop:
        out += [LOOPBACK4, LOOPBACK6]
    return out, loop


def _longest(entries: Sequence[tuple[_Net, int]], addr: _Addr) -> int:
    best: tuple[int, int] | None = None
    for net, r in entries:
        if addr.version == net.version and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, r)
    return best[1] if best else 0


def exec_holds(tables: KernelTables, filename: str | bytes, argv: Sequence[str | bytes] = (),
               exe_name: str | bytes | None = None, truncated: bool = False) -> bool:
    """Whether the kernel holds such an exec for a user-space verdict (no deny matched)."""
    if tables.flags & ConfigFlag.EXEC_HOLD_ALL:
        return True
    names = [_text(filename).rsplit("/", 1)[-1].lower()] + ([_text(exe_name).lower()] if exe_name else [])
    if any(tables.exec_names.get(b) == RULE_HOLD for b in names):
        return True
    blob = "\0".join(_text(a) for a in argv).lower()
    if tables.hold_args_min and (truncated or any(_arg_bytes(a) >= tables.hold_args_min for a in argv)):
        return True
    if truncated and any(w == PatternWhere.ARGS for _p, w, _r in tables.exec_patterns):
        return True
    return any(rid == RULE_HOLD and ((w == PatternWhere.BASENAME and any(p in "/" + b for b in names))
                                     or (w == PatternWhere.ARGS and p in blob))
               for p, w, rid in tables.exec_patterns)


def net_verdict(tables: KernelTables, daddr: str, dport: int, protocol: str = "tcp", via_lo: bool = False) -> int:
    """Python emulation of the kernel's network verdict (pc_net_judge, used at
    connect/sendmsg and for every packet): the rule id the kernel would refuse
    a `protocol` ("tcp"/"udp"/"icmp"/...) packet or connection to
    `daddr`:`dport` with, or 0."""
    tcp, udp = tables.ports.get(int(dport), (0, 0))
    rid = {"tcp": tcp, "udp": udp}.get(protocol, 0)
    if rid:
        return rid
    addrs, _loop = canonical_destinations(daddr, via_lo)
    if not addrs:
        return 0
    soft = {rid for rid, name in tables.rules.items() if name in ("network.deny_internal", "network.deny_metadata")}
    deny = hard = soft_hit = 0
    allowed = passed = False
    for addr in addrs:
        for r in tables.addr_rules:
            if any(addr.version == n.version and addr in n for n in r.nets) and r.covers(protocol, int(dport)):
                if r.kind == "deny":
                    deny = deny or r.rule
                else:
                    allowed = True
                    passed = passed or r.kind == "pass"
        hit = _longest(_trie(tables, "deny", addr), addr)
        if hit in soft:
            soft_hit = soft_hit or hit
        elif hit:
            hard = hard or hit
        allowed = allowed or bool(_longest(_trie(tables, "allow", addr), addr))
    if deny or hard:
        return deny or hard
    if soft_hit and not passed:
        return soft_hit
    if tables.flags & ConfigFlag.NET_DEFAULT_DENY and not allowed:
        return DEFAULT_DENY_RULE_ID
    return 0


def limited_allow_ids(tables: KernelTables) -> set[int]:
    """Allow rules judged by the address rule table (ports, protocol,
    nameservers): their addresses stay out of the kernel's allow tries."""
    return {r.rule for r in tables.addr_rules if r.kind != "deny"}


def _trie(tables: KernelTables, which: str, addr: _Addr) -> list[tuple[_Net, int]]:
    """The deny/allow trie for addr's family as the kernel holds it: IPv4-mapped
    IPv6 entries as IPv4 (net_maps.split_mapped), limited allow rules left out."""
    skip = limited_allow_ids(tables) if which == "allow" else set()
    v4: list[tuple[_Net, int]] = [e for e in (tables.deny4 if which == "deny" else tables.allow4) if e[1] not in skip]
    v6: list[tuple[_Net, int]] = []
    for net, rid in (tables.deny6 if which == "deny" else tables.allow6):
        if rid in skip:
            continue
        mapped = net.network_address.ipv4_mapped if net.prefixlen >= 96 else None
        if mapped is not None:
            v4.append((ipaddress.IPv4Network((mapped, net.prefixlen - 96)), rid))
        else:
            v6.append((net, rid))
    return v4 if addr.version == 4 else v6


def kernel_verdict(tables: KernelTables, ev: Event | Mapping[str, Any]) -> int:
    """The rule id the kernel would deny an exec/connect/send with, or 0, for
    an event (ExecEvent/NetEvent) or an audit-record dict. Other kinds: 0.
    Used by replay and tests; see exec_verdict and net_verdict."""
    if isinstance(ev, Mapping):
        kind = str(ev.get("kind", ""))
        raw = ev.get("exe")
        exe: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if kind == "exec":
            return exec_verdict(tables, ev.get("filename", ""), ev.get("argv") or (), exe_name=exe.get("name"))
        if kind == "exec_map":     # issue 11: a file mapped executable, judged by its own name
            return exec_verdict(tables, "", (), exe_name=exe.get("name")) if exe.get("name") else 0
        if kind in ("connect", "send", "packet"):
            return net_verdict(tables, ev.get("daddr", ""), int(ev.get("dport") or 0), ev.get("protocol", "tcp"))
        return 0
    ident = getattr(ev, "exe", None)
    exe_name = ident.name if isinstance(ident, ExeIdentity) and ident.name else None
    if ev.kind == "exec":
        return exec_verdict(tables, getattr(ev, "filename", b""), getattr(ev, "argv", ()), exe_name=exe_name)
    if ev.kind == "exec_map":
        return exec_verdict(tables, "", (), exe_name=exe_name) if exe_name else 0
    if ev.kind in ("connect", "send", "packet"):
        return net_verdict(tables, getattr(ev, "daddr", ""), getattr(ev, "dport", 0), getattr(ev, "proto_name", "tcp"))
    return 0
