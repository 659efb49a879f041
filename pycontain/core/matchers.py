"""Ordered glob rules, matched in one regex pass.

The engine checks every exec an agent makes against dozens of policy globs.
Nearly every exec matches none, so the common question is "does any glob
match?": one combined regex answers it in a single pass. Only on a hit are the
globs walked in policy order to name the first one, which keeps the semantics
of a plain loop over ``fnmatch.fnmatchcase``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence


def _combined(globs: Sequence[str]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class GlobList:
    """(rule, glob) pairs in policy order, compared case-insensitively.

    :meth:`first` matches a glob containing ``/`` against the whole path and
    any other glob against the basename; :meth:`first_arg` matches every glob
    against each argument."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self.items = [(rule, g, g.lower()) for rule, g in items]
        lowered = [gl for _r, _g, gl in self.items]
        self._path = _combined([g for g in lowered if "/" in g])
        self._base = _combined([g for g in lowered if "/" not in g])
        self._any = _combined(lowered)

    def __bool__(self) -> bool:
        return bool(self.items)

    def first(self, path: str, base: str) -> tuple[str, str] | None:
        """The first (rule, glob) matching ``path`` or its basename ``base``."""
        path, base = path.lower(), base.lower()
        if not ((self._path and self._path.match(path)) or (self._base and self._base.match(base))):
            return None
        for rule, g, gl in self.items:
            if fnmatch.fnmatchcase(path if "/" in gl else base, gl):
                return rule, g
        return None   # pragma: no cover - the combined regex said one matches

    def first_arg(self, args: Sequence[str]) -> tuple[str, str] | None:
        """The first (rule, glob), in policy order, matching any argument."""
        if self._any is None:
            return None
        lowered = [a.lower() for a in args]
        if not any(self._any.match(a) for a in lowered):
            return None
        for rule, g, gl in self.items:
            if any(fnmatch.fnmatchcase(a, gl) for a in lowered):
                return rule, g
        return None   # pragma: no cover
