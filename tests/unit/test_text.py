from hypothesis import given
from hypothesis import strategies as st

from pycontain.core.text import safe_argv, safe_text, unescape, unescape_bytes


def test_escape_sequences_are_neutralised():
    out = safe_text("\x1b[2J\x1b]0;owned\x07hello")
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("\\x1b[2J")


def test_invalid_utf8_survives_as_hex():
    assert safe_text(b"ok\xff\xfe") == "ok\\xff\\xfe"


def test_bidi_and_c1_controls_escaped():
    out = safe_text("a\u202eb\x85c")
    assert "\u202e" not in out and "\x85" not in out


def test_bounded_with_marker():
    out = safe_text("x" * 10000, limit=100)
    assert out.startswith("x" * 100) and out.endswith("…[+9900]")


def test_argv_quoting():
    assert safe_argv(["ls", "a b", ""]) == "ls 'a b' ''"


@given(st.binary(max_size=512))
def test_never_emits_control_characters(raw):
    out = safe_text(raw)
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F or 0x80 <= ord(c) < 0xA0 for c in out)


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_limit_respected(s, limit):
    out = safe_text(s, limit=limit)
    assert len(out) <= limit + len(f"…[+{4 * len(s) + 10}]")


def test_every_code_point_is_escaped_exactly_when_it_is_unsafe():
    """The one-pass regex escapes precisely the characters _escape_char changes."""
    from pycontain.core.text import _escape_char

    for o in range(0x110000):
        if 0xD800 <= o < 0xE000:
            continue
        c = chr(o)
        assert safe_text(c) == _escape_char(c), hex(o)
        # bytes input keeps the backslashes its decoding produced
        if c != "\\":
            assert safe_text(c.encode()) == _escape_char(c), hex(o)


# ---- reversible escaping (issue 13 part 6) ----------------------------------------


@given(st.binary(max_size=512))
def test_escaping_bytes_is_reversible(raw):
    assert unescape_bytes(safe_text(raw)) == raw


@given(st.text(max_size=300))
def test_escaping_text_is_reversible(s):
    assert unescape(safe_text(s)) == s


def test_an_agents_own_backslash_escapes_cannot_pose_as_ours():
    # an argv that *looks* like an escape stays what it was, and a raw byte
    # 0x85 is not the C1 control U+0085
    for raw in (b"\\x41", b"\\\\", b"a\\", b"\\u202e", b"\x85", "\x85".encode()):
        assert unescape_bytes(safe_text(raw)) == raw
    assert safe_text(b"\x85") != safe_text("\x85".encode())
