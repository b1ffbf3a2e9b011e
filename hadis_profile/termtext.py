"""User text made safe for a terminal: control characters out, Rich markup escaped.

Model names, prompts, paths and messages come from users and files. Printed raw,
``light[/x]`` would crash a Rich markup string, ``[link=...]`` would become a
hyperlink, and an ANSI escape or a bidirectional override would drive the
terminal. Every view that prints user text goes through :func:`clean` or
:func:`esc`; Rich is imported only when markup is escaped.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates (U+202A-U+202E, U+2066-U+2069) that can make text display other than it reads.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text: object, *, one_line: bool = False) -> str:
    """``str(text)`` with terminal control characters removed (``one_line``: newlines and
    tabs become spaces too). An ANSI sequence ``ESC[31m`` loses its ESC and shows as ``[31m``."""
    out = _CONTROL.sub("", str(text))
    return " ".join(out.split()) if one_line else out


def esc(text: object) -> str:
    """User text for a Rich markup string: :func:`clean`, then markup-escaped."""
    from rich.markup import escape

    return escape(clean(text))
