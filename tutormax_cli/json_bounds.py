"""JSON text parsed within documented bounds (SPEC §6a), for every JSON input of tutormax:
JSON Lines records, queue envelopes and JSON lists in CSV cells.

Python's json module builds whatever it is given: a record nested 10,000 deep raises
RecursionError, and one nested 900 deep parses into something that Arrow then turns into
gigabytes. `loads_bounded` refuses such text before json builds anything (the depth is
counted on the raw text first), and `check_width` refuses a record of more than
`MAX_COLUMNS` keys the same way. `loads_record` adds that every key can name a column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .schema import JSON_MAX_DEPTH, MAX_COLUMNS


class StructureError(ValueError):
    """JSON text whose structure is over a documented limit (nesting depth, width)."""


class TooManyKeys(StructureError):
    """A JSON object of more keys than the limit; `keys` says how many it has."""

    def __init__(self, keys: int, limit: int) -> None:
        super().__init__(f"JSON object of {keys:,} keys, over the limit of {limit:,}")
        self.keys = keys


# A JSON string (with its escapes) or one bracket; brackets inside strings are skipped.
_TOKENS_B = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOKENS_S = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
# The same, plus the `:` after each object key.
_KEY_TOKENS_B = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:]', re.DOTALL)
_KEY_TOKENS_S = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]', re.DOTALL)
_OPEN = frozenset("[{")
_CLOSE = frozenset("]}")


def _marks(text: bytes | str, with_colons: bool = False) -> Iterator[str]:
    """The first character of each JSON string and each bracket (and `:`) in `text`."""
    if isinstance(text, bytes):
        tokens_b = _KEY_TOKENS_B if with_colons else _TOKENS_B
        return (chr(m.group()[0]) for m in tokens_b.finditer(text))
    tokens_s = _KEY_TOKENS_S if with_colons else _TOKENS_S
    return (m.group()[0] for m in tokens_s.finditer(text))


def nesting_depth(text: bytes | str) -> int:
    """The deepest nesting of arrays and objects in JSON text (0 for a scalar)."""
    depth = deepest = 0
    for c in _marks(text):
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


def top_level_keys(text: bytes | str) -> int:
    """How many keys the outermost JSON object of `text` has (0 if it is not an object)."""
    depth = keys = 0
    for c in _marks(text, with_colons=True):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == ":" and depth == 1:
            keys += 1
    return keys


def check_width(text: bytes | str, max_keys: int = MAX_COLUMNS) -> None:
    """Raise StructureError if the JSON object in `text` has more than `max_keys` keys,
    without parsing it. NOTE: as for depth, a C-speed count of `:` bounds the key count;
    only text with more colons than the limit is scanned exactly."""
    colons = text.count(b":") if isinstance(text, bytes) else text.count(":")
    if colons <= max_keys:
        return
    keys = top_level_keys(text)
    if keys > max_keys:
        raise TooManyKeys(keys, max_keys)


_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _orjson() -> Callable[[bytes | str], Any] | None:
    try:
        import orjson
    except ImportError:  # the `fast` extra is not installed
        return None
    loads: Callable[[bytes | str], Any] = orjson.loads
    return loads


_orjson_loads = _orjson()
# orjson reads an integer beyond 64 bits as a float (json: an int): such text, and any run of
# 19 digits (a 64-bit integer has at most 19), is left to json. Found by mapping every digit
# to "0" and everything else to " " (bytes.translate, a table look-up a byte; a regex took
# five times orjson's own time), then looking for 19 zeros.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def _long_digit_run(text: bytes | str) -> bool:
    if isinstance(text, str):
        return _DIGIT_RUN.search(text) is not None
    return _LONG_RUN in text.translate(_DIGITS_AS_ZEROS)


_DIGIT_RUN = re.compile("[0-9]{19}")


def orjson_loads(text: bytes) -> Any:
    """orjson's reading of UTF-8 bytes, without json_loads' scan for long digit runs: the
    same value as json.loads except that an integer beyond 64 bits comes back as a float
    (whose repr is in exponent form: |x| ≥ 2**63). ValueError where orjson refuses, which
    includes every case json reads differently but that one. For callers that can tell
    such a float from what they do next (queue.envelope: the checksum's dump shows it);
    others call json_loads. Without orjson installed it raises ValueError."""
    if _orjson_loads is None:
        raise ValueError("orjson is not installed")
    return _orjson_loads(text)


def json_loads(text: bytes | str) -> Any:
    """`json.loads(text)`, faster on the usual input: UTF-8 bytes holding exactly
    one JSON value. Anything else (other encodings, a BOM, whitespace around the value,
    errors) is left to json.loads itself, so results and error messages are its own.
    Unbounded: check the depth first (or call loads_bounded).

    With orjson installed it reads first: what it accepts it reads as json.loads does
    (tests/test_json_bounds.py holds it to that); what it refuses (NaN, lone surrogates,
    a BOM, numbers out of range, invalid UTF-8…) json reads or refuses in its own words."""
    if _orjson_loads is not None and not _long_digit_run(text):
        try:
            return _orjson_loads(text)
        except ValueError:  # orjson.JSONDecodeError
            pass
    try:
        s = text.decode() if isinstance(text, bytes) else text
        value, end = _scan_once(s, 0)
        if end == len(s):
            return value
    except (UnicodeDecodeError, StopIteration, ValueError):
        pass
    return json.loads(text)


def loads_bounded(text: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """`json.loads(text)`, but StructureError (a ValueError) for text nested too deep."""
    check_depth(text, max_depth)
    return json_loads(text)


def loads_record(
    text: bytes | str, max_depth: int = JSON_MAX_DEPTH, max_keys: int = MAX_COLUMNS
) -> dict[str, Any]:
    """One JSON record (an object) within the limits; StructureError or ValueError (not
    JSON, not an object, a key with a NUL byte or a lone surrogate) otherwise."""
    check_depth(text, max_depth)
    check_width(text, max_keys)
    obj = json_loads(text)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    check_keys(obj)
    return obj


class NumberText(str):
    """A JSON number as it was written (`1e2`, `-0`, `123456789012345678.1`): its token text,
    which the int or double json makes of it may not keep."""


def loads_number_texts(text: bytes | str) -> Any:
    """`json.loads(text)` with every number (and NaN, Infinity) kept as its token text, a
    NumberText. For the rare value whose text matters and a double does not hold (a number
    in a string field: records.records_to_table); unbounded, so for text already parsed
    within bounds."""
    return json.loads(text, parse_float=NumberText, parse_int=NumberText, parse_constant=NumberText)


class AsWritten(dict[str, Any]):
    """A JSON object (a record) read by `loads_number_texts`: its numbers are NumberText,
    and it is written back with each as it was read (dumps_as_written)."""


def data_as_written(text: bytes | str, key: str | None = None) -> AsWritten | None:
    """The object in `text` (or its member `key`) with its numbers as written; None if it
    is none (not JSON, not an object)."""
    try:
        value = loads_number_texts(text)
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
    except (ValueError, RecursionError):
        return None
    return AsWritten(value) if isinstance(value, dict) else None


def record_as_written(value: Any, text: bytes | str | None, key: str | None = None) -> Any:
    """`value`, what `text` (or its member `key`) parses to, read again with its numbers as
    written (AsWritten) where one may write back otherwise (loses_text); `value` itself
    where none may, or where the text cannot be read so."""
    if text is None or not loses_text(value):
        return value
    return data_as_written(text, key) or value


def loses_text(value: Any) -> bool:
    """Whether Python's value may write back otherwise than its JSON was written: a float
    (`1e2` is `100.0`), the int 0 (`-0`), or a container holding one."""
    t = type(value)
    if t is float or (t is int and value == 0):
        return True
    if t is list:
        return any(map(loses_text, value))
    if t is dict:
        return any(map(loses_text, value.values()))
    return False


def check_keys(obj: dict[str, Any]) -> None:
    """A record's keys must be able to name columns: UTF-8 text without NUL bytes."""
    keys = "".join(obj)
    if "\x00" in keys:
        raise ValueError("a key holds a NUL byte")
    try:
        keys.encode()
    except UnicodeEncodeError:
        raise ValueError("a key is not valid UTF-8 (a lone surrogate)") from None


__all__ = [
    "AsWritten",
    "NumberText",
    "StructureError",
    "TooManyKeys",
    "check_depth",
    "check_keys",
    "check_width",
    "data_as_written",
    "dumps_as_written",
    "json_loads",
    "loads_bounded",
    "loads_number_texts",
    "loads_record",
    "loses_text",
    "record_as_written",
    "nesting_depth",
    "orjson_loads",
    "top_level_keys",
]


# -- writing ---------------------------------------------------------------------------------

NONFINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def nonfinite_name(value: float) -> str:
    """A non-finite float as tutormax writes it in JSON: the string "NaN", "Infinity" or
    "-Infinity" (the tokens Python's json reads and writes bare, which RFC 8259 has not)."""
    return NONFINITE_NAMES[str(value)]


def as_null(_value: float) -> None:
    """The replacement in an output file's rows: null (see dumps_strict)."""
    return None


def finite(value: Any, replace: Callable[[float], Any] = nonfinite_name) -> Any:
    """`value` with each non-finite float replaced; a key of an object by its name (a key
    is text in JSON)."""
    if isinstance(value, float):
        return value if value - value == 0 else replace(value)  # inf - inf and NaN: NaN
    if isinstance(value, dict):
        return {finite(k) if isinstance(k, float) else k: finite(v, replace)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return [finite(v, replace) for v in value]
    return value


def dumps_strict(value: Any, replace: Callable[[float], Any] = nonfinite_name, **kw: Any) -> str:
    """`json.dumps(value, **kw)` as strict JSON (RFC 8259), what every JSON document
    tutormax writes for people and programs is: a non-finite float is written as
    `replace(x)` (default: its name, a string; output files' rows: null). The value is
    copied only when it holds one. (The queue's envelopes are not written by this: their
    checksum is of Python's own `json.dumps`, SPEC §6.)"""
    try:
        return json.dumps(value, allow_nan=False, **kw)
    except ValueError:  # a non-finite float somewhere
        return json.dumps(finite(value, replace), allow_nan=False, **kw)


def dumps_as_written(
    value: Any, *, sort_keys: bool = True, strict: bool = False, indent: int | None = None
) -> str:
    """`json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, indent=indent)` of a value
    read by `loads_number_texts`: each number (a NumberText) written as it was read, so that
    a dead letter, its replay and its export carry `1e2` as `1e2`, not as the `100.0` of its
    double. Text beyond ASCII as UTF-8, escaped where it cannot be (a lone surrogate).
    `strict`: RFC 8259, as dumps_strict (NaN and the infinities as their names, strings)."""
    text = _as_written(value, _Style(False, sort_keys, strict, indent))
    try:
        text.encode()
    except UnicodeEncodeError:
        return _as_written(value, _Style(True, sort_keys, strict, indent))
    return text


_NONFINITE_TOKENS = frozenset(("NaN", "Infinity", "-Infinity"))


class _Style(NamedTuple):
    ascii_only: bool
    sort_keys: bool
    strict: bool
    indent: int | None


def _as_written(v: Any, style: _Style, level: int = 0) -> str:
    if isinstance(v, NumberText):
        return json.dumps(str(v)) if style.strict and v in _NONFINITE_TOKENS else str(v)
    if isinstance(v, dict):
        keys = sorted(v) if style.sort_keys else list(v)
        items = [f"{json.dumps(k, ensure_ascii=style.ascii_only)}: "
                 f"{_as_written(v[k], style, level + 1)}" for k in keys]  # fmt: skip
        return _joined("{", items, "}", style.indent, level)
    if isinstance(v, list):
        return _joined("[", [_as_written(x, style, level + 1) for x in v], "]", style.indent, level)
    if style.strict:
        return dumps_strict(v, ensure_ascii=style.ascii_only)
    return json.dumps(v, ensure_ascii=style.ascii_only)


def _joined(opening: str, items: list[str], closing: str, indent: int | None, level: int) -> str:
    """Items between brackets as json.dumps joins them, on one line or indented."""
    if indent is None:
        return opening + ", ".join(items) + closing
    if not items:
        return opening + closing
    inner, outer = "\n" + " " * (indent * (level + 1)), "\n" + " " * (indent * level)
    return opening + inner + ("," + inner).join(items) + outer + closing
