"""Stable rule ids, severities and tags (pure).

A rule's name is what alerts, dashboards and SIEM queries key on (the
`rule` metric label, the audit field), so it must not change when someone
inserts a line above it. Every list rule therefore has an id:

* the author's own, ``id:`` on a mapping entry (``{name: xmrig, id: miners}``,
  a network rule, a ``deny_program_args`` entry); several rules may share one
  id (a group such as ``miners``), with one severity and one set of tags;
* by default one derived from the rule's content, never its position:
  ``exec.deny:xmrig``, ``exec.deny_args:*stratum+tcp*``,
  ``exec.deny_program_args:ssh -R*``, ``network.deny:198.51.100.0/24 tcp/3333``.
  Long contents are cut and given a short digest of the whole, so the id stays
  unique and bounded (it is a Prometheus label).

Each rule also has a severity (info, low, medium, high, critical; default
``medium``, or the built-in rule's own) and optional tags; both go into
audit records, never into metric labels.

A rule's *place* in the file (``exec.deny[3]``) is still where errors point;
:func:`rule_id` maps a place to the rule's id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from .errors import PolicyError
from .policy_yaml import Node, gather, merged

if TYPE_CHECKING:
    from .policy import NetRule, Policy

SEVERITIES = ("info", "low", "medium", "high", "critical")
DEFAULT_SEVERITY = "medium"
RULE_ID = r"[A-Za-z0-9][A-Za-z0-9_.:/+*-]{0,63}"
TAG = r"[a-z0-9][a-z0-9_.:-]{0,31}"
MAX_TAGS = 16
ID_MAX = 96
RULE_META_KEYS = ("id", "severity", "tags")

# rules that are not list entries: their names are fixed, their severities are ours
BUILTIN_SEVERITY: Mapping[str, str] = {
    "network.stratum": "critical", "boundary.escape": "critical", "gpu.signature": "critical",
    "gpu.correlation": "high", "gpu.program": "high", "exec.allow": "high",
}


@dataclass(frozen=True)
class RuleMeta:
    id: str
    severity: str = DEFAULT_SEVERITY
    tags: tuple[str, ...] = ()


def bounded(prefix: str, content: str) -> str:
    """``prefix:content``, cut to ID_MAX characters with a digest of the
    whole content when it is longer (two different long rules never share an id)."""
    full = f"{prefix}:{content}"
    if len(full) <= ID_MAX:
        return full
    digest = hashlib.sha256(content.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{full[:ID_MAX - 12]}~{digest}"


def net_rule_content(r: NetRule) -> str:
    """A network rule's content in one canonical line: addresses, protocol, ports."""
    where = " ".join(list(r.cidrs) + [h if h != "@nameservers" else "nameservers" for h in r.hosts]) or "any"
    ports = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in r.ports)
    proto = r.protocol if r.protocol != "any" or ports else ""
    tail = f"{proto}/{ports}" if ports else proto
    return f"{where} {tail}".strip()


def derived_id(policy: Policy, place: str) -> str | None:
    """The content-derived id of the rule at ``place`` (``exec.deny[3]``), or
    None for a place that is no list rule (it is its own name)."""
    section, _, rest = place.partition("[")
    if not rest:
        return None
    i = int(rest.rstrip("]"))
    ex, nw = policy.exec, policy.network
    if section == "exec.deny" and i < len(ex.deny):
        return bounded(section, ex.deny[i])
    if section == "exec.deny_args" and i < len(ex.deny_args):
        return bounded(section, ex.deny_args[i])
    if section == "exec.deny_program_args" and i < len(ex.deny_program_args):
        prog, arg = ex.deny_program_args[i]
        return bounded(section, f"{prog} {arg}")
    if section in ("network.deny", "network.allow"):
        rules = nw.deny if section == "network.deny" else nw.allow
        if i < len(rules):
            return bounded(section, net_rule_content(rules[i]))
    return None


def rule_id(policy: Policy, place: str) -> str:
    """The id of the rule at ``place``: the author's, else the derived one,
    else the place itself (fixed names such as ``network.deny_internal``)."""
    meta = policy.rule_meta.get(place)
    if meta is not None:
        return meta.id
    return derived_id(policy, place) or place


def meta_by_id(policy: Policy) -> dict[str, RuleMeta]:
    """Severity and tags of every rule id of the policy (for audit records)."""
    out = {m.id: m for m in policy.rule_meta.values()}
    for name, sev in BUILTIN_SEVERITY.items():
        out.setdefault(name, RuleMeta(name, sev))
    return out


# ---- reading ids, severities and tags from the policy file --------------------

def _entries(top: Mapping[str, Node], section: str, key: str) -> list[Node]:
    sec = top.get(section)
    if sec is None or not isinstance(sec.node, yaml.MappingNode):
        return []
    n = sec.find(key)
    return n.seq() if n is not None else []


def _places(top: Mapping[str, Node], policy: Policy) -> list[tuple[str, Node]]:
    """(place, the YAML entry that declares the rule) for every list rule.
    One deny_program_args entry declares one rule per argument glob."""
    out: list[tuple[str, Node]] = []
    for section, key in (("exec", "deny"), ("exec", "deny_args"), ("network", "deny"), ("network", "allow")):
        out += [(f"{section}.{key}[{i}]", n) for i, n in enumerate(_entries(top, section, key))]
    flat = 0
    for n in _entries(top, "exec", "deny_program_args"):
        args = n.find("args") if isinstance(n.node, yaml.MappingNode) else None
        count = len(args.node.value) if args is not None and isinstance(args.node, yaml.SequenceNode) else 0
        out += [(f"exec.deny_program_args[{flat + k}]", n) for k in range(count)]
        flat += count
    return out


def _meta(n: Node, default_id: str) -> RuleMeta:
    if not isinstance(n.node, yaml.MappingNode):
        return RuleMeta(default_id)
    m = {k: v for k, v in n.mapping(tuple(k.value for k, _v in n.node.value)).items() if k in RULE_META_KEYS}
    rid = m["id"].str(RULE_ID, "rule id (letters, digits and _ . : / + * -, at most 64)") if "id" in m else default_id
    sev = m["severity"].choice(SEVERITIES) if "severity" in m else DEFAULT_SEVERITY
    tags: tuple[str, ...] = ()
    if "tags" in m:
        items = m["tags"].seq()
        if len(items) > MAX_TAGS:
            raise m["tags"].error(f"at most {MAX_TAGS} tags")
        tags = tuple(dict.fromkeys(gather(items, lambda t: t.str(TAG, "tag ([a-z0-9_.:-], at most 32)"))))
    return RuleMeta(rid, sev, tags)


def read_rule_meta(top: Mapping[str, Node], policy: Policy) -> dict[str, RuleMeta]:
    """Every list rule's id, severity and tags, by place. Rules may share an
    id (a group), but then with one severity and one set of tags."""
    out: dict[str, RuleMeta] = {}
    first: dict[str, tuple[RuleMeta, Node]] = {}
    errors: list[PolicyError] = []
    for place, n in _places(top, policy):
        default = derived_id(policy, place)
        if default is None:          # the section did not parse: its errors are reported already
            continue
        try:
            meta = _meta(n, default)
            seen = first.setdefault(meta.id, (meta, n))
            if (seen[0].severity, seen[0].tags) != (meta.severity, meta.tags):
                raise n.error(f"rule id {meta.id!r} is given another severity or tags at line {seen[1].line}",
                              "rules that share an id share its severity and tags: make them equal")
        except PolicyError as e:
            errors += e.all()
            continue
        out[place] = meta
    if errors:
        raise merged(errors)
    return out


def meta_fields(policy: Policy, place: str) -> dict[str, object]:
    """The id, severity and tags of the rule at ``place`` that differ from
    the defaults, as policy keys (for `policy show`: output that loads back)."""
    meta = policy.rule_meta.get(place)
    if meta is None:
        return {}
    out: dict[str, object] = {}
    if meta.id != derived_id(policy, place):
        out["id"] = meta.id
    if meta.severity != DEFAULT_SEVERITY:
        out["severity"] = meta.severity
    if meta.tags:
        out["tags"] = list(meta.tags)
    return out
