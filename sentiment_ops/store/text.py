"""The one text rule of the inference store: which texts it can hold (``text_problem``, the
check of every way in: ``/predict``, ``/predict/batch``, ``/invocations``, ``sentops
feedback import``), the hash it keys texts by (``text_hash``), and ``storable``, which
escapes what the rule refuses so an error message quoting such a text can still be kept."""

from __future__ import annotations

import hashlib
import re

# C0 controls and DEL, except tab, newline and carriage return. C1 controls (U+0080-U+009F)
# are allowed: they are real client text, Windows-1252 punctuation decoded as Latin-1
# ("…" as U+0085, the en dash as U+0096): 865 of the 33,530 bundled IMDB / Rotten Tomatoes texts
# hold one, and PostgreSQL stores them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_problem(text: str) -> str | None:
    """Why the store cannot hold ``text`` as it is, or None: the one text rule of every way
    in (``/predict``, ``/predict/batch``, ``/invocations``, ``sentops feedback import``).

    C0 control characters (U+0000-U+001F) other than tab, newline and carriage return, and
    DEL (U+007F), are refused (PostgreSQL cannot store U+0000 in a text column, and the
    others are terminal codes, never sentiment), and so are lone surrogates (not encodable
    as UTF-8). C1 controls pass: mis-decoded Windows-1252 punctuation is common in real text."""
    found = _CONTROL.search(text)
    if found is not None:
        return (
            f"text holds the control character U+{ord(found.group()):04X} at position {found.start()} "
            "(only tab, newline and carriage return are allowed)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"text holds a lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start} (not valid Unicode)"
    return None


def text_hash(text: str) -> str:
    """The SHA-256 of a text (UTF-8), hex: kept for every row, even with ``store_text`` off."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def storable(text: str) -> str:
    """``text`` with what ``text_problem`` refuses escaped: control characters as ``\\uXXXX``,
    lone surrogates as backslash escapes (error messages may quote the refused value)."""
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
