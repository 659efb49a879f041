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
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|([\\ntr]))")
_SIMPLE = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
_UNSIMPLE = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_DISGUISE = frozenset((0x2028, 0x2029, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
                       0x2066, 0x2067, 0x2068, 0x2069))


def _escape_char(ch: str) -> str:
    """One unsafe character's escape. Each escape has one meaning, so
    :func:`unescape` restores every input exactly: ``\\\\`` is a backslash,
    ``\\xNN`` below 0x80 a C0 control or DEL, ``\\xNN`` from 0x80 a byte that
    is not UTF-8 (surrogateescape), ``\\uNNNN`` a C1 control, a bidi or line
    separator, or a lone surrogate."""
    o = ord(ch)
    if ch in _SIMPLE:
        return _SIMPLE[ch]
    if o < 0x20 or o == 0x7F:
        return f"\\x{o:02x}"
    if 0xDC80 <= o <= 0xDCFF:          # an undecodable byte (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    if 0x80 <= o < 0xA0 or 0xD800 <= o < 0xE000 or o in _DISGUISE:
        # C1 controls, line separators and bidi overrides can disguise what a terminal shows
        return f"\\u{o:04x}"
    return ch


def _unescape_match(m: re.Match[str]) -> str:
    hx, uni, simple = m.groups()
    if hx is not None:
        n = int(hx, 16)
        return chr(n) if n < 0x80 else chr(0xDC00 + n)
    if uni is not None:
        return chr(int(uni, 16))
    return _UNSIMPLE[simple]


def unescape(text: str) -> str:
    """The string :func:`safe_text` escaped (for bytes, with undecodable bytes
    as surrogateescape characters): ``unescape(safe_text(s)) == s`` for every
    str and, through :func:`unescape_bytes`, every byte string, as long as
    nothing was cut at the limit. A backslash that starts no escape (a log
    written before escapes were reversible) stays as written."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_unescape_match, text)


def unescape_bytes(text: str) -> bytes:
    """The bytes an escaped audit string stood for (filename, argv). A lone
    surrogate no byte string gives (only a hand-made log has one) is encoded
    as such rather than refused."""
    s = unescape(text)
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def _escape_match(m: re.Match[str]) -> str:
    return _escape_char(m.group())


def safe_text(value: bytes | str | None, limit: int = MAX_TEXT) -> str:
    """Return a printable, bounded rendering of an untrusted value.

    Invalid UTF-8 bytes become ``\\xNN``; backslashes, control characters
    (C0, C1, DEL) and bidi controls are escaped, reversibly (:func:`unescape`);
    the result is cut at ``limit`` characters with a ``…[+N]`` marker saying
    how much was dropped.
    """
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        if value.isascii():
            value = value.decode("ascii")
        else:
            value = bytes(value).decode("utf-8", errors="surrogateescape")   # bad bytes -> \\xNN below
    # the common case, no regex pass: printable ASCII (no C0 control, no DEL)
    # with no backslash has nothing _UNSAFE matches
    if value.isascii() and value.isprintable() and "\\" not in value:
        out = value
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
