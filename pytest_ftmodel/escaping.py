"""How untrusted text is shown: the one place that decides which characters are escaped.

Model answers, program output and anything a server sends may hold characters that act on the
reader's display instead of being read: C0/C1 control characters (ANSI escape sequences that clear
a terminal, recolour it or plant an OSC 8 link) and the Unicode bidirectional controls (U+202A-U+202E,
U+2066-U+2069, and the marks U+200E, U+200F, U+061C) that reorder what is shown ("Trojan Source").
Every surface (terminal, Markdown, HTML, JUnit, the review page's script, error messages) shows them
as visible escapes: ``\\x1b``, ``\\u202e``. Newline and tab are kept; each surface lays out lines itself.
"""

from __future__ import annotations

import html
import re
from typing import Any

#: what could drive a terminal or reorder text: C0/C1 controls but newline and tab, DEL, bidi controls
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: Any) -> str:
    """``text`` (``None`` reads as empty) with every control character shown as an escape
    (``\\x1b``, ``\\u202e``), never obeyed."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), "" if text is None else str(text))


def html_text(value: Any) -> str:
    """``value`` as HTML text (attribute-safe): escaped markup, and control characters shown as in :func:`visible`."""
    return html.escape(visible(value), quote=True)
