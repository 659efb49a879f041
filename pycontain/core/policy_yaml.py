"""YAML with line numbers: a small typed walker over PyYAML's node tree.

Every value is read through :class:`Node`, which knows its file, line and
key path, so every error says exactly where it is:
``policy.yaml:12: network.deny[1].cidr: '10.0.0.0/33' is not a valid CIDR``.
"""

from __future__ import annotations

import builtins
import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml

from .errors import PolicyError

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?)B?\s*$", re.I)
_DUR_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)")
_DUR_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# YAML 1.2 core schema floats that YAML 1.1 (PyYAML) reads as strings: 1e1, 2E-3
_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


class Node:
    def __init__(self, node: yaml.Node | None, file: str, path: str, line: int | None = None):
        self.node = node
        self.file = getattr(node, "pc_file", None) or file     # merged trees (policy_extends.py)
        self.path = path
        self.line = (node.start_mark.line + 1) if node is not None else line

    def error(self, problem: str, hint: str | None = None) -> PolicyError:
        return PolicyError(self.file, self.line, self.path, problem, hint)

    # ---- shapes ----------------------------------------------------------------

    def mapping(self, known: tuple[str, ...]) -> dict[str, Node]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping, got {self._kind()}")
        out: dict[str, Node] = {}
        for k, v in self.node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise Node(k, self.file, self.path).error("keys must be plain strings")
            key = k.value
            child = Node(v, self.file, f"{self.path}.{key}" if self.path else key)
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise Node(k, self.file, child.path).error(
                    "unknown key", f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known))
            if key in out:
                raise Node(k, self.file, child.path).error("duplicate key")
            out[key] = child
        return out

    def find(self, path: builtins.str) -> Node | None:
        """The node at a key path such as ``exec.deny[3]`` (None: not there)."""
        node: Node = self
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
            child = None
            if part.startswith("[") and isinstance(node.node, yaml.SequenceNode):
                i = int(part[1:-1])
                if i < len(node.node.value):
                    child = Node(node.node.value[i], self.file, f"{node.path}{part}")
            elif isinstance(node.node, yaml.MappingNode):
                child = next((Node(v, self.file, f"{node.path}.{part}" if node.path else part)
                              for k, v in node.node.value if getattr(k, "value", None) == part), None)
            if child is None:
                return None
            node = child
        return node

    def seq(self) -> list[Node]:
        if isinstance(self.node, yaml.ScalarNode) and self.node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"expected a list, got {self._kind()}")
        return [Node(v, self.file, f"{self.path}[{i}]") for i, v in enumerate(self.node.value)]

    def _kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        return repr(self.node.value) if self.node is not None else "nothing"

    def scalar(self) -> Any:
        """The value, numbers read as YAML 1.2 does (``1e1`` is 10.0); NaN
        and infinity are refused: they pass every range check."""
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.error(f"expected a single value, got {self._kind()}")
        v = _construct(self.node)
        if isinstance(v, str) and self.node.style is None and _YAML12_FLOAT.fullmatch(v):
            v = float(v)
        if isinstance(v, float) and not math.isfinite(v):
            raise self.error(f"{self.node.value!r} is not a finite number")
        return v

    # ---- typed scalars ----------------------------------------------------------

    def str(self, pattern: builtins.str | None = None, what: builtins.str = "value",
            maxlen: int = 256) -> builtins.str:
        v = self.scalar()
        if not isinstance(v, str) or not v:
            raise self.error(f"expected a non-empty string, got {v!r}")
        if len(v) > maxlen:
            raise self.error(f"too long ({len(v)} > {maxlen} characters)")
        if pattern and not re.fullmatch(pattern, v):
            raise self.error(f"{v!r} is not a valid {what}")
        return v

    def bool(self) -> builtins.bool:
        v = self.scalar()
        if not isinstance(v, bool):
            raise self.error(f"expected true or false, got {v!r}")
        return v

    def number(self, lo: float | None = None, hi: float | None = None, integer: builtins.bool = False) -> float:
        v = self.scalar()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise self.error(f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.error(f"{v!r} is out of range "
                             f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]")
        return v

    def choice(self, options: tuple[builtins.str, ...]) -> builtins.str:
        v = self.scalar()
        if v not in options:
            raise self.error(f"{v!r} is not one of: {', '.join(options)}")
        return str(v)

    def size(self) -> int:
        v = self.scalar()
        if isinstance(v, bool):
            raise self.error(f"expected a size like 16GiB, got {v!r}")
        if isinstance(v, int):
            n = v
        else:
            parsed = parse_size(str(v))
            if parsed is None:
                raise self.error(f"{v!r} is not a size (use e.g. 512MiB, 16GiB, 1.5G or bytes)")
            n = parsed
        if n <= 0:
            raise self.error(f"size must be positive, got {v!r}")
        return n

    def duration(self) -> float:
        v = self.scalar()
        if isinstance(v, bool):
            raise self.error(f"expected a duration like 30s, got {v!r}")
        parsed = float(v) if isinstance(v, (int, float)) else _parse_duration(str(v))
        if parsed is None:
            raise self.error(f"{v!r} is not a duration (use e.g. 500ms, 30s, 5m, 1h30m, 1d)")
        s = parsed
        if s <= 0:
            raise self.error(f"duration must be positive, got {v!r}")
        return s


def parse_size(text: str) -> int | None:
    """Bytes of "512MiB", "1.5G", "4096"; None if not a size."""
    m = _SIZE.match(text)
    if not m:
        return None
    mult = {"": 1, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}[m.group(2).upper()]
    base = 1024 if (m.group(3) or m.group(2) == "") else 1000
    return int(float(m.group(1)) * (base ** mult)) if m.group(2) else int(float(m.group(1)))


def _parse_duration(text: str) -> float | None:
    """Seconds of "30", "500ms", "1h30m", "1d 2h"; None if not a duration."""
    t = text.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", t):
        return float(t)
    pos, total = 0, 0.0
    for m in _DUR_PART.finditer(t):
        if t[pos:m.start()].strip():
            return None
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return total if pos and not t[pos:].strip() else None


def _construct(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def compose(text: str, file: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise PolicyError(file, mark.line + 1 if mark else None, "", f"YAML syntax error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise PolicyError(file, None, "", f"YAML error: {e}") from None
    if root is None:
        raise PolicyError(file, 1, "", "the policy is empty")
    return Node(root, file, "")


_I = TypeVar("_I")
_R = TypeVar("_R")


def gather(items: Iterable[_I], read: Callable[[_I], _R]) -> list[_R]:
    """``read`` of every item; the errors of all items, not only the first,
    are raised together (PolicyError.more, in file order), so `policy check`
    lists every bad entry of a section at once."""
    out: list[_R] = []
    errors: list[PolicyError] = []
    for item in items:
        try:
            out.append(read(item))
        except PolicyError as e:
            errors += e.all()
    if errors:
        raise merged(errors)
    return out


def merged(errors: list[PolicyError]) -> PolicyError:
    """One PolicyError carrying all of ``errors`` (sorted by line, de-duplicated)."""
    seen: dict[str, PolicyError] = {}
    for e in sorted(errors, key=lambda e: e.line or 0):
        seen.setdefault(e.message, e)
    first, *rest = seen.values()
    first.more = rest
    return first
