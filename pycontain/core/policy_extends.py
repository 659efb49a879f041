"""`extends:` — a policy built on a base policy without copying it.

A policy that says ``extends: default`` (or ``strict``, or a path to another
policy file, relative to the extending file) is merged onto its base at the
YAML node level, before any key is read, so every value keeps the file and
line it came from and an error still names the file that has it:

* mappings merge key by key;
* lists append, an entry already inherited is dropped (same value);
* scalars override;
* ``!replace [..]`` (or ``!replace {..}``) replaces the inherited value
  whole; ``!remove [..]`` removes these entries from the inherited list, and
  an entry that is not there is an error (a typo must not go unnoticed).

A base may itself extend another; a cycle is an error. Merging is pure: the
caller (core/policy.py) reads the files and hands over composed trees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from .errors import PolicyError
from .policy_yaml import Node

REPLACE = "!replace"
REMOVE = "!remove"
# a composed tree, given a base reference ("default", "strict" or a path) and
# the extending file: the base's tree and its canonical name (for cycles)
Loader = Callable[[Node, str], tuple[Node, str]]


def tag_file(node: yaml.Node, file: str) -> None:
    """Mark every node of a tree with its file, so merged trees keep it."""
    node.pc_file = file  # type: ignore[attr-defined]
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            tag_file(k, file)
            tag_file(v, file)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            tag_file(v, file)


def resolve(root: Node, load: Loader, seen: tuple[str, ...]) -> Node:
    """The policy tree with its `extends:` chain merged in (none: unchanged
    but checked: `!remove` with nothing to remove from is an error). `seen`
    holds the canonical names of the files on the chain so far, root's last."""
    if root.node is None:
        return root
    tag_file(root.node, root.file)
    ext = _extends_node(root)
    if ext is None:
        _check_tags(root.node, "")
        return root
    base, name = load(ext, root.file)
    if name in seen:
        raise ext.error(f"extends {ext.scalar()!r} makes a cycle: {' -> '.join(seen + (name,))}",
                        "a policy may extend a chain of others, never itself")
    base = resolve(base, load, seen + (name,))
    merged = _merge(base.node, _without_extends(root.node), "")
    return Node(merged, root.file, "")


def _extends_node(root: Node) -> Node | None:
    if not isinstance(root.node, yaml.MappingNode):
        return None
    for k, v in root.node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "extends":
            n = Node(v, root.file, "extends")
            n.str(maxlen=4096)
            return n
    return None


def _without_extends(node: yaml.Node) -> yaml.Node:
    pairs = [(k, v) for k, v in node.value if not (isinstance(k, yaml.ScalarNode) and k.value == "extends")]
    return _like(node, pairs)


def _like(node: yaml.Node, value: Any, tag: str | None = None) -> yaml.Node:
    """A node of the same kind, position and file as `node` with a new value."""
    out = type(node)(tag or node.tag, value, node.start_mark, node.end_mark)
    out.pc_file = getattr(node, "pc_file", None)  # type: ignore[attr-defined]
    return out


def _plain_tag(node: yaml.Node) -> str:
    return "tag:yaml.org,2002:map" if isinstance(node, yaml.MappingNode) else "tag:yaml.org,2002:seq"


def _merge(base: yaml.Node | None, over: yaml.Node, path: str) -> yaml.Node:
    if over.tag == REPLACE:
        if isinstance(over, yaml.ScalarNode):
            raise _error(over, path, "!replace is for lists and mappings", "a single value already overrides")
        return _check_tags(_like(over, over.value, _plain_tag(over)), path)
    if over.tag == REMOVE:
        return _remove(base, over, path)
    if isinstance(base, yaml.MappingNode) and isinstance(over, yaml.MappingNode):
        return _merge_mappings(base, over, path)
    if isinstance(base, yaml.SequenceNode) and isinstance(over, yaml.SequenceNode):
        have = {_canon(v) for v in base.value}
        added = [_check_tags(v, path) for v in over.value if _canon(v) not in have]
        return _like(over, list(base.value) + _dedup(added))
    return _check_tags(over, path)      # scalars, or a different kind: the extending value wins


def _merge_mappings(base: yaml.MappingNode, over: yaml.MappingNode, path: str) -> yaml.Node:
    pairs = list(base.value)
    index = {k.value: i for i, (k, _) in enumerate(pairs) if isinstance(k, yaml.ScalarNode)}
    for k, v in over.value:
        i = index.get(k.value) if isinstance(k, yaml.ScalarNode) else None
        sub = f"{path}.{k.value}" if path else str(k.value)
        if i is None:
            pairs.append((k, _check_tags(v, sub)))
        else:
            pairs[i] = (k, _merge(pairs[i][1], v, sub))
    return _like(over, pairs)


def _remove(base: yaml.Node | None, over: yaml.Node, path: str) -> yaml.Node:
    if not isinstance(over, yaml.SequenceNode):
        raise _error(over, path, "!remove takes a list of the inherited entries to remove")
    if not isinstance(base, yaml.SequenceNode):
        raise _error(over, path, "!remove: the base policy has no list here")
    have = {_canon(v) for v in base.value}
    drop = set()
    for i, v in enumerate(over.value):
        if _canon(v) not in have:
            raise _error(v, f"{path}[{i}]", "!remove: this entry is not in the base policy",
                         "compare with `pycontain policy show --builtin NAME`")
        drop.add(_canon(v))
    return _like(over, [v for v in base.value if _canon(v) not in drop], _plain_tag(over))


def _check_tags(node: yaml.Node, path: str) -> yaml.Node:
    """A value with nothing under it to merge onto: `!replace` just means the
    value; `!remove` has nothing to remove from."""
    if node.tag == REMOVE:
        raise _error(node, path, "!remove: the base policy has nothing here to remove from")
    if node.tag == REPLACE:
        if isinstance(node, yaml.ScalarNode):
            raise _error(node, path, "!replace is for lists and mappings", "a single value already overrides")
        node.tag = _plain_tag(node)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _check_tags(v, f"{path}.{k.value}")
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _check_tags(v, f"{path}[{i}]")
    return node


def _dedup(nodes: Any) -> list[yaml.Node]:
    out, seen = [], set()
    for v in nodes:
        c = _canon(v)
        if c not in seen:
            seen.add(c)
            out.append(v)
    return out


def _canon(node: yaml.Node) -> Any:
    """A hashable value for comparing entries across files."""
    if isinstance(node, yaml.MappingNode):
        return ("map", tuple(sorted((_canon(k), _canon(v)) for k, v in node.value)))
    if isinstance(node, yaml.SequenceNode):
        return ("seq", tuple(_canon(v) for v in node.value))
    return ("scalar", str(node.value))


def _error(node: yaml.Node, path: str, problem: str, hint: str | None = None) -> PolicyError:
    return PolicyError(getattr(node, "pc_file", None) or "<policy>", node.start_mark.line + 1, path, problem, hint)
