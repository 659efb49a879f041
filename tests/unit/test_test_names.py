"""The suite runs as one pytest session over tests/ (scripts/test), where
tests/unit and tests/kernel are plain directories: two test modules with one
basename would stop collection ("import file mismatch") for the whole run."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename():
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
