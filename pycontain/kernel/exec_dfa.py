"""Compile exec substring patterns into the automaton ebpf/exec.c runs (pure).

Aho-Corasick over lower-cased bytes: the kernel feeds each byte of the
basename (from state 0) or of argv (from ``args_root``) through
``byte -> class -> table[state][class]`` and stops at the first entry with a
rule id. Two independent automata share one table. Matching is
case-insensitive because 'A'..'Z' get the class of 'a'..'z'.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..core.events import RULE_HOLD, PatternWhere

# PC_DFA_STATES, PC_DFA_CLASSES, PC_DFA_MATCH_SHIFT of ebpf/exec.c (the
# layout test compares them: kernel/abi.py)
DFA_STATES = 2080
DFA_CLASSES = 128
MATCH_SHIFT = 16
# pc_exec_dfa_ctl slots (PC_CTL_* of ebpf/exec.c): the active bank, then per
# bank (+ bank) the args root state and the two pattern counts; last, the
# argument length from which an exec is held (KernelTables.hold_args_min)
CTL_BANK = 0
CTL_ARGS_ROOT = 1
CTL_BASENAME_COUNT = 3
CTL_ARGS_COUNT = 5
CTL_HOLD_ARGS_MIN = 7


@dataclass
class Automaton:
    byte_class: list[int]            # 256 entries
    nclasses: int
    rows: list[list[int]]            # state -> entry per class (next | rule << 16)
    args_root: int
    basename_count: int
    args_count: int


def _fold(b: int) -> int:
    return b + 32 if 65 <= b <= 90 else b


def _better(new: int, cur: int) -> bool:
    """Whether `new` should be a state's rule instead of `cur`: the first
    deny wins; a hold (RULE_HOLD) only fills a state with no deny."""
    return not cur or (cur == RULE_HOLD and new not in (0, RULE_HOLD))


def compile_patterns(patterns: list[tuple[bytes, int, int]]) -> Automaton:
    """patterns: (lower-case bytes, PatternWhere, rule id). Rule ids must be
    1..65535; the first-listed pattern wins when several end at one byte."""
    chars = sorted({_fold(b) for raw, _w, _r in patterns for b in raw})
    if len(chars) + 1 > DFA_CLASSES:
        raise ValueError(f"exec patterns use {len(chars)} distinct bytes; at most {DFA_CLASSES - 1}")
    cls_of = {ch: i + 1 for i, ch in enumerate(chars)}
    byte_class = [cls_of.get(_fold(b), 0) for b in range(256)]
    nclasses = len(chars) + 1

    goto: list[dict[int, int]] = []
    out: list[int] = []

    def new_state() -> int:
        goto.append({})
        out.append(0)
        return len(goto) - 1

    roots = {PatternWhere.BASENAME: new_state()}
    roots[PatternWhere.ARGS] = new_state()
    counts = {PatternWhere.BASENAME: 0, PatternWhere.ARGS: 0}
    for raw, where, rule in patterns:
        if not raw:
            continue
        if not 0 < rule < (1 << (32 - MATCH_SHIFT)):
            raise ValueError(f"rule id {rule} out of range for the exec automaton")
        where = PatternWhere(where)
        counts[where] += 1
        s = roots[where]
        for b in raw:
            c = byte_class[b]
            if c not in goto[s]:
                goto[s][c] = new_state()
            s = goto[s][c]
        if _better(rule, out[s]):
            out[s] = rule
    if len(goto) > DFA_STATES:
        raise ValueError(f"exec patterns need {len(goto)} automaton states; at most {DFA_STATES}")

    fail = [0] * len(goto)
    rows = [[0] * nclasses for _ in goto]
    for root in roots.values():
        queue: deque[int] = deque()
        for c in range(nclasses):
            nxt = goto[root].get(c)
            if nxt is None:
                rows[root][c] = root
            else:
                fail[nxt] = root
                rows[root][c] = nxt
                queue.append(nxt)
        while queue:
            s = queue.popleft()
            if _better(out[fail[s]], out[s]):
                out[s] = out[fail[s]]
            for c in range(nclasses):
                nxt = goto[s].get(c)
                if nxt is None:
                    rows[s][c] = rows[fail[s]][c]
                else:
                    fail[nxt] = rows[fail[s]][c]
                    rows[s][c] = nxt
                    queue.append(nxt)
    # encode: the entry leading into a state carries that state's rule id
    for s, row in enumerate(rows):
        rows[s] = [nxt | (out[nxt] << MATCH_SHIFT) for nxt in row]
    return Automaton(byte_class, nclasses, rows, roots[PatternWhere.ARGS],
                     counts[PatternWhere.BASENAME], counts[PatternWhere.ARGS])


def first_match(a: Automaton, data: bytes, root: int) -> int:
    """Reference run of the automaton (what the kernel's pc_dfa_scan does):
    the first deny rule id; RULE_HOLD if only hold patterns matched; 0."""
    s = root
    held = 0
    for b in data:
        e = a.rows[s][a.byte_class[b]]
        rule = e >> MATCH_SHIFT
        if rule == RULE_HOLD:
            held = RULE_HOLD
        elif rule:
            return rule
        s = e & 0xFFFF
    return held
