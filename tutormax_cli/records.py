"""JSON text → Python values with bounded structure (SPEC §6a).

Python's json module builds whatever it is given: a record nested 10,000 deep raises
RecursionError, and one nested 900 deep parses into something that Arrow then turns into
gigabytes. `loads_bounded` refuses such text before json builds anything: the depth is
counted on the raw text first. Every JSON parse of untrusted input in tutormax goes
through it (JSON Lines records, queue envelopes, JSON lists in CSV cells).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .schema import JSON_MAX_DEPTH


class StructureError(ValueError):
    """JSON text whose structure is over a documented limit (nesting depth, width)."""


# A JSON string (with its escapes) or one bracket; brackets inside strings are skipped.
_TOKENS_B = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOKENS_S = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPEN = frozenset("[{")


def nesting_depth(text: bytes | str) -> int:
    """The deepest nesting of arrays and objects in JSON text (0 for a scalar)."""
    tokens = _TOKENS_B if isinstance(text, bytes) else _TOKENS_S
    depth = deepest = 0
    for m in tokens.finditer(text):
        tok = m.group()
        c = chr(tok[0]) if isinstance(tok, bytes) else tok[0]
        if c in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif c != '"':
            depth -= 1
    return deepest


def check_depth(text: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> None:
    """Raise StructureError if `text` nests deeper than `max_depth`, without parsing it.

    NOTE: depth can never exceed the number of `[` and `{` characters, and counting them
    is a C-speed scan; only text with more openers than the limit is scanned exactly."""
    if isinstance(text, bytes):
        openers = text.count(b"[") + text.count(b"{")
    else:
        openers = text.count("[") + text.count("{")
    if openers <= max_depth:
        return
    depth = nesting_depth(text)
    if depth > max_depth:
        raise StructureError(f"JSON nested {depth} deep, over the limit of {max_depth}")


def loads_bounded(text: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """`json.loads(text)`, but StructureError (a ValueError) for text nested too deep."""
    check_depth(text, max_depth)
    return json.loads(text)


__all__ = ["StructureError", "check_depth", "loads_bounded", "nesting_depth"]
