"""Safe rendering of untrusted, agent-supplied strings.

argv, comm, file names and payload snippets come from the agent. They may hold
terminal escape sequences, invalid UTF-8 or be huge. Everything that reaches a
terminal, a log line or a table goes through :func:`safe_text` first. Nothing
agent-supplied ever becomes a Prometheus label.
"""

from __future__ import annotations

import re

MAX_TEXT = 4096
# what _escape_char changes: most text has none of it and is returned as is
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_BACKSLASH = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(ch: str) -> str:
    o = ord(ch)
    if ch == "\\":
        return "\\\\"
    if o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0:
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\x{o:02x}")
    if o in (0x2028, 0x2029, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069):
        # line separators and bidi overrides can disguise what a terminal shows
        return f"\\u{o:04x}"
    return ch


def _escape_match(m: re.Match[str]) -> str:
    return _escape_char(m.group())


def safe_text(value: bytes | str | None, limit: int = MAX_TEXT) -> str:
    """Return a printable, bounded rendering of an untrusted value.

    Invalid UTF-8 bytes become ``\\xNN``; control characters (C0, C1, DEL) and
    bidi controls are escaped; the result is cut at ``limit`` characters with
    a ``…[+N]`` marker saying how much was dropped.
    """
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
        # backslashreplace already escaped bad bytes; escape the rest below but
        # keep those escapes intact
        out = _UNSAFE_KEEP_BACKSLASH.sub(_escape_match, value)
    else:
        out = _UNSAFE.sub(_escape_match, value)
    if len(out) > limit:
        dropped = len(out) - limit
        out = out[:limit] + f"…[+{dropped}]"
    return out


def safe_argv(argv: list[bytes | str], limit: int = MAX_TEXT) -> str:
    """Render an argv list as one escaped, bounded, shell-like string."""
    parts = []
    for a in argv:
        s = safe_text(a, limit)
        if not s or any(c in s for c in " \"'"):
            s = "'" + s.replace("'", "\\'") + "'"
        parts.append(s)
    return _bound(" ".join(parts), limit)


def _bound(s: str, limit: int) -> str:
    if len(s) > limit:
        return s[:limit] + f"…[+{len(s) - limit}]"
    return s
