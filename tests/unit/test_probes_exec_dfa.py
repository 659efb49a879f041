"""The exec pattern automaton against a naive substring search."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycontain.core.events import PatternWhere
from pycontain.kernel.exec_dfa import DFA_STATES, compile_patterns, first_match

ALPHA = b"abcAB+:/\0x"


def naive(patterns, data: bytes, where) -> int:
    """Rule of the pattern that ends first in data (ties: first listed)."""
    low = bytes(b + 32 if 65 <= b <= 90 else b for b in data)
    best = None
    for raw, w, rule in patterns:
        if w != where:
            continue
        i = low.find(raw)
        if i >= 0:
            end = i + len(raw)
            if best is None or end < best[0]:
                best = (end, rule)
    return best[1] if best else 0


def test_known_cases():
    pats = [(b"xmr", PatternWhere.BASENAME, 3), (b"stratum+tcp://", PatternWhere.ARGS, 5)]
    a = compile_patterns(pats)
    assert first_match(a, b"miner\0--url=StRaTuM+TCP://pool:3333", a.args_root) == 5
    assert first_match(a, b"XMRig", 0) == 3
    assert first_match(a, b"xmrig", a.args_root) == 0      # basename patterns only on the basename
    assert first_match(a, b"stratum+tcp:/", a.args_root) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=4)
                          .map(lambda b: bytes(ALPHA[x % len(ALPHA)] for x in b).lower()),
                          st.sampled_from(list(PatternWhere))), min_size=1, max_size=6),
       st.binary(max_size=40).map(lambda b: bytes(ALPHA[x % len(ALPHA)] for x in b)))
def test_matches_naive_search(raw_pats, data):
    pats = [(p, w, i + 1) for i, (p, w) in enumerate(raw_pats)]
    a = compile_patterns(pats)
    for where, root in ((PatternWhere.BASENAME, 0), (PatternWhere.ARGS, a.args_root)):
        got = first_match(a, data, root)
        want = naive(pats, data, where)
        # same end position; on ties at one end position any rule ending there is fine
        if want == 0:
            assert got == 0
        else:
            ends = {r for p, w, r in pats if w == where and data.lower().find(p) >= 0
                    and data.lower().find(p) + len(p) == min(data.lower().find(q) + len(q) for q, w2, _ in pats
                                                             if w2 == where and data.lower().find(q) >= 0)}
            assert got in ends


def test_limits():
    big = [(bytes([65 + i % 26]) * 32, PatternWhere.ARGS, i + 1) for i in range(32)]
    a = compile_patterns(big)
    assert len(a.rows) <= DFA_STATES
    with pytest.raises(ValueError):
        compile_patterns([(b"a", PatternWhere.ARGS, 70000)])
