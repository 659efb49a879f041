"""Selector globs compiled for the kernel's cgroup-birth hook (pure; issue 10).

The daemon's ``agents:`` selectors name cgroups by a glob over the cgroup2
path (``cgroup:``, matched with :func:`fnmatch.fnmatchcase` against the path
relative to the cgroup2 mount, ``*`` crossing ``/``) or by systemd unit
(``systemd_unit:``, a glob over the leaf directory name). ebpf/boundary.c
runs, at every cgroup_mkdir, one deterministic automaton over the new
cgroup's path as the kernel prints it (``/a/b/c``): one table lookup per
byte, which the verifier accepts where a backtracking glob matcher would not.

This module builds that automaton (Thompson positions, subset construction
over byte classes) with the same semantics as the periodic scan
(pycontain/actuate/discovery.py), so a cgroup is picked by the kernel at
birth exactly when the scan would pick it later. Hand-written because no
maintained library emits a table-driven DFA in a fixed-size layout the BPF
program can walk; it is ~100 lines and tested against fnmatch.

Selectors the kernel cannot match stay with the scan: ``command:`` (a
process property, not a cgroup one), globs with non-ASCII bracket sets, and
selectors that would push the automaton past its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy import AgentSelector

BIRTH_STATES = 128      # PC_BIRTH_STATES in ebpf/pycontain.h (state 0 dead, 1 start)
BIRTH_CLASSES = 64      # PC_BIRTH_CLASSES
PATH_MAX = 255          # bytes of the path the kernel walks (PC_CGPATH_LEN - 1)

ANY = frozenset(range(256))
NOT_SLASH = frozenset(range(256)) - {ord("/")}

# one pattern item: (byte set, repeat) where repeat means "zero or more"
Item = tuple[frozenset[int], bool]


class GlobTooComplex(ValueError):
    pass


@dataclass(frozen=True)
class BirthAutomaton:
    byte_class: tuple[int, ...]          # 256 entries
    rows: tuple[tuple[int, ...], ...]    # rows[state][class] -> next state (0 dead)
    accept: tuple[int, ...]              # accept[state] -> selector index + 1, 0 none
    kernel: tuple[int, ...] = ()         # selector indices matched in the kernel
    scan: dict[int, str] = field(default_factory=dict)   # selector index -> why scan-only


def _items(glob: str, star: frozenset[int]) -> list[Item]:
    """fnmatch syntax (``*``, ``?``, ``[seq]``, ``[!seq]``) as items; a lone
    ``[`` is literal, as in fnmatch."""
    raw = glob.encode("utf-8")
    out: list[Item] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == ord("*"):
            out.append((star, True))
        elif c == ord("?"):
            out.append((star, False))
        elif c == ord("["):
            s = _bracket(raw, i)
            if s is None:
                out.append((frozenset({c}), False))
            else:
                chars, i = s
                out.append((chars, False))
                continue
        else:
            out.append((frozenset({c}), False))
        i += 1
    return out


def _bracket(raw: bytes, i: int) -> tuple[frozenset[int], int] | None:
    """The set of ``raw[i:]`` = ``[...]`` and the index after it, or None (no ``]``)."""
    j = i + 1
    neg = j < len(raw) and raw[j] == ord("!")
    if neg:
        j += 1
    if j < len(raw) and raw[j] == ord("]"):
        j += 1
    end = raw.find(b"]", j)
    if end < 0:
        return None
    body = raw[i + 1 + (1 if neg else 0): end]
    if any(b >= 0x80 for b in body):
        raise GlobTooComplex("non-ASCII bracket set")
    chars: set[int] = set()
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == ord("-"):
            chars.update(range(body[k], body[k + 2] + 1))
            k += 3
        else:
            chars.add(body[k])
            k += 1
    return (frozenset(ANY - chars) if neg else frozenset(chars)), end + 1


def selector_items(sel: AgentSelector) -> list[Item]:
    """The items of a selector's path pattern as the kernel prints paths, or
    raise GlobTooComplex."""
    cg, unit = getattr(sel, "cgroup", None), getattr(sel, "systemd_unit", None)
    if cg:
        return [(frozenset({ord("/")}), False), *_items(cg.strip("/"), ANY)]
    if unit:
        # any ancestors, then the leaf: a unit glob never spans a '/'
        return [(ANY, True), (frozenset({ord("/")}), False), *_items(unit, NOT_SLASH)]
    raise GlobTooComplex("command selectors are a process property: matched by the scan")


def _closure(states: set[tuple[int, int]], pats: Sequence[list[Item]]) -> frozenset[tuple[int, int]]:
    out = set(states)
    todo = list(states)
    while todo:
        p, i = todo.pop()
        if i < len(pats[p]) and pats[p][i][1] and (p, i + 1) not in out:
            out.add((p, i + 1))
            todo.append((p, i + 1))
    return frozenset(out)


def _classes(pats: Sequence[list[Item]]) -> tuple[list[int], list[int]]:
    """Byte -> class (by membership in every item set), and one byte per class."""
    sets = sorted({s for pat in pats for s, _ in pat}, key=sorted)
    sig: dict[tuple[bool, ...], int] = {}
    byte_class = []
    reps: list[int] = []
    for b in range(256):
        key = tuple(b in s for s in sets)
        if key not in sig:
            sig[key] = len(sig)
            reps.append(b)
        byte_class.append(sig[key])
    if len(reps) > BIRTH_CLASSES:
        raise GlobTooComplex(f"more than {BIRTH_CLASSES} byte classes")
    return byte_class, reps


def build(pats: Sequence[list[Item]], owners: Sequence[int]) -> BirthAutomaton:
    """The DFA of the union of `pats`; a match reports the lowest owner."""
    byte_class, reps = _classes(pats) if pats else ([0] * 256, [0])
    start = _closure({(p, 0) for p in range(len(pats))}, pats)
    index: dict[frozenset[tuple[int, int]], int] = {frozenset(): 0, start: 1}
    order = [frozenset(), start]
    rows: list[tuple[int, ...]] = []
    k = 0
    while k < len(order):
        cur = order[k]
        row = []
        for b in reps:
            nxt: set[tuple[int, int]] = set()
            for p, i in cur:
                if i < len(pats[p]) and b in pats[p][i][0]:
                    nxt.add((p, i) if pats[p][i][1] else (p, i + 1))
            key = _closure(nxt, pats)
            if key not in index:
                if len(order) >= BIRTH_STATES:
                    raise GlobTooComplex(f"more than {BIRTH_STATES} automaton states")
                index[key] = len(order)
                order.append(key)
            row.append(index[key])
        rows.append(tuple(row))
        k += 1
    accept = []
    for st in order:
        done = [owners[p] for p, i in st if i == len(pats[p])]
        accept.append(min(done) + 1 if done else 0)
    return BirthAutomaton(tuple(byte_class), tuple(rows), tuple(accept))


def compile_selectors(selectors: Sequence[AgentSelector]) -> BirthAutomaton:
    """Every selector the kernel can match, in one automaton; the rest are
    listed in ``scan`` with the reason. A selector that would overflow the
    automaton is left to the scan, not the whole set."""
    pats: list[list[Item]] = []
    owners: list[int] = []
    scan: dict[int, str] = {}
    best = build([], [])
    for idx, sel in enumerate(selectors):
        try:
            items = selector_items(sel)
            trial = build([*pats, items], [*owners, idx])
        except GlobTooComplex as e:
            scan[idx] = str(e)
            continue
        pats.append(items)
        owners.append(idx)
        best = trial
    return BirthAutomaton(best.byte_class, best.rows, best.accept, kernel=tuple(owners), scan=scan)


def matches(a: BirthAutomaton, path: bytes) -> int | None:
    """Run the automaton like the kernel does: the selector index, or None."""
    state = 1
    for b in path[:PATH_MAX]:
        state = a.rows[state][a.byte_class[b]]
        if state == 0:
            return None
    return a.accept[state] - 1 if a.accept[state] else None


def attach_prefix(sel: AgentSelector) -> str:
    """The deepest directory (relative to the cgroup2 root, '' = the root)
    that holds every cgroup the selector can match: the literal components
    before the first wildcard, less the last one (the cgroup itself may not
    exist yet, or be made again)."""
    cg = getattr(sel, "cgroup", None)
    if not cg:
        return ""
    parts = cg.strip("/").split("/")
    lit: list[str] = []
    for part in parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        lit.append(part)
    return "/".join(lit)
