"""Per-episode labels of an agent (pure): bounded and escaped.

Callers that start agents (RL rollout workers, harnesses) attach labels such
as an episode or task id. They are recorded in the audit log and the state
API, never used as Prometheus labels (their values are unbounded in number).
Keys are short and plain; values are any text, escaped with core.text and cut.
"""

from __future__ import annotations

import re

from .errors import UsageError
from .text import safe_text

MAX_LABELS = 16
MAX_VALUE = 256
_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


def clean_labels(raw: object) -> dict[str, str]:
    """Validated, escaped labels; UsageError naming the bad key otherwise."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError("labels must be a mapping of names to values")
    if len(raw) > MAX_LABELS:
        raise UsageError(f"at most {MAX_LABELS} labels ({len(raw)} given)")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not _KEY.match(k):
            raise UsageError(f"label name {safe_text(str(k), 40)!r}: use 1-32 characters of [a-z0-9_.-], "
                             "starting with a letter")
        out[k] = safe_text(v if isinstance(v, (str, bytes)) else str(v), MAX_VALUE)
    return out
