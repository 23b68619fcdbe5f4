"""What the CLI shows of data (served texts, names and tags from the registry, paths, error
messages) goes through here: plain Rich ``Text``, never markup, so ``[/bold]`` cannot crash a
command and ``[link=…]`` cannot put a hyperlink in a terminal, with control characters
made visible, so an ESC sequence or a C1 control in a served text never reaches the
terminal raw."""

from __future__ import annotations

import re

from rich.highlighter import JSONHighlighter
from rich.text import Text

# C0 controls except tab and newline, DEL and C1 controls (U+0080-U+009F: U+009B is CSI to
# terminals that honour 8-bit controls); the store keeps C1 controls (mis-decoded Windows-1252)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_DEL_AND_C1 = re.compile("[\x7f-\x9f]")  # what json.dumps(ensure_ascii=False) leaves raw


def visible(value: object) -> str:
    """``str(value)`` with each control character (ESC, CR, BEL, CSI…) written as ``\\xNN``."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def plain(value: object, style: str = "") -> Text:
    """``value`` as Rich text that is never read as markup, its controls made visible."""
    return Text(visible(value), style=style)


def compose(*parts: str | Text) -> Text:
    """One line from pieces: ``str`` pieces are our own words (Rich markup allowed), ``Text``
    pieces are data (``plain``)."""
    out = Text()
    for part in parts:
        out.append(part if isinstance(part, Text) else Text.from_markup(part))
    return out


def json_controls_escaped(text: str) -> str:
    """JSON text with DEL and C1 controls written as ``\\u00XX`` (the same JSON: they only
    occur inside strings); ``json.dumps`` escapes C0 controls itself."""
    return _DEL_AND_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_text(text: str) -> Text:
    """JSON text (``json_controls_escaped``) highlighted as Rich's ``print_json`` does, without
    its parse and dump, which would write the escaped controls raw again."""
    out = JSONHighlighter()(Text(text))
    out.no_wrap = True
    out.overflow = None
    return out
