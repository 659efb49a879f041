"""GlobList answers exactly what a plain loop over fnmatchcase answers."""

import fnmatch
import os

from hypothesis import given
from hypothesis import strategies as st

from pycontain.core.matchers import GlobList

ALPHABET = "aAbB/.*?[]!-x"
globs = st.lists(st.text(ALPHABET, min_size=1, max_size=6), max_size=6)
names = st.text("aAbB/.x-", max_size=10)


def naive_first(items, path, base):
    for rule, g in items:
        if fnmatch.fnmatchcase((path if "/" in g else base).lower(), g.lower()):
            return rule, g
    return None


def naive_first_arg(items, args):
    for rule, g in items:
        if any(fnmatch.fnmatchcase(a.lower(), g.lower()) for a in args):
            return rule, g
    return None


@given(globs, names)
def test_first_is_the_first_glob_in_policy_order(gs, path):
    items = [(f"r{i}", g) for i, g in enumerate(gs)]
    base = os.path.basename(path)
    assert GlobList(items).first(path, base) == naive_first(items, path, base)


@given(globs, st.lists(names, max_size=4))
def test_first_arg_is_the_first_glob_matching_any_argument(gs, args):
    items = [(f"r{i}", g) for i, g in enumerate(gs)]
    assert GlobList(items).first_arg(args) == naive_first_arg(items, args)


def test_path_globs_see_the_path_and_others_the_basename():
    gl = GlobList([("a", "/opt/*/xmrig"), ("b", "*MINER*")])
    assert gl.first("/opt/x/XMRig", "XMRig") == ("a", "/opt/*/xmrig")
    assert gl.first("/tmp/cpuminer-opt", "cpuminer-opt") == ("b", "*MINER*")
    assert gl.first("/opt/miner/ok", "ok") is None       # "*miner*" is a basename glob
    assert not GlobList([]) and GlobList([]).first("/x", "x") is None
