"""Per-column SPEC §1 rules: one definition of every parse, applied value by value.

A value's verdict (accepted with which typed value, or rejected with which codes) depends
on the value alone, never on the batch it comes in. Each column is parsed with whole-column
Arrow kernels; where one Arrow cast refuses a column, the column is cut in halves and the
halves cast again, recursively, until the refused values are isolated (`cast_each`): the
same cast, never a second grammar. Each rule yields a `Problem` (a boolean mask over the
batch, an error code, a message); a value that fails its parse becomes null in the typed
output, so later rules and formulas never see it (its row is rejected anyway).

The rules (text is what CSV gives; native is what Parquet and JSON give):

Text, every type: a value is trimmed of surrounding whitespace first (Unicode whitespace).
Except in string and list fields, a value blank after trimming is null (missing).

Timestamps, text: `YYYY-MM-DD` (midnight UTC), or `YYYY-MM-DD` then `T` or one space then
`HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction`, then optionally `Z` or `±HH:MM` (no offset
means UTC). Seconds are optional; an hour alone (`2024-11-07T14`) is invalid. The fraction
has 1-9 digits; digits beyond microseconds are truncated. Offsets are `Z` or `±HH:MM` only
(hours 00-23, minutes 00-59; not `+0530`, not `+05`, not a lower-case `z`). Dates must
exist in the calendar (`2024-02-30` is invalid; `2024-02-29` is valid), hours are 00-23,
minutes and seconds 00-59. The resulting UTC instant must lie in the years 1-9999, so
`0001-01-01T00:00:00+05:00` and `0000-01-01` are invalid. Otherwise `invalid_timestamp`.
Timestamps, native: a timestamp of any unit and any timezone is its instant (a timestamp
without a timezone is read as UTC), truncated to microseconds (towards the past); a date
(date32, date64) is midnight UTC of that day; either must lie in the years 1-9999.
Anything else (numbers, times, durations, nested values, ...) is `invalid_timestamp`.

Ints, text: an optional `+` or `-`, then decimal digits only (leading zeros allowed),
within int64: `9223372036854775807` is valid, 20 digits, `0x10`, `7.0`, `1e3` and `+-7`
are `invalid_int`. Ints, native: integer types of any width within int64 (a uint64 above
it is `invalid_int`); a float (of any width) only if it is finite, integral and within
int64 (`45.0` is 45: pandas writes nullable int columns as floats; `4.5`, `1e20`, nan and
inf are `invalid_int`); a decimal only if integral and within int64. Booleans, dates,
timestamps, nested values and every other type are `invalid_int`.

Floats, text: Arrow's decimal float grammar (optional sign, digits with an optional
decimal point, optional exponent: `1.5`, `+.5`, `1.`, `-2e-3`), finite only: `nan`,
`inf`, `Infinity` and out-of-range values such as `1e309` are `invalid_float`; a value too
small for a double (`1e-400`) is 0. Floats, native: float16/32/64 (finite only), integer
types of any width (rounded to the nearest double, as text is), decimals (read as their
exact decimal text, so they round exactly as text does). Others are `invalid_float`.

Booleans: text `true`/`false`, `1`/`0`, `yes`/`no`, `t`/`f` in any case; native booleans;
native integers 0 and 1. Anything else is `invalid_bool`.

Strings: text as is (only ids are trimmed). A native scalar is rendered as text by Arrow's
cast to string: integers as digits (`45`), floats in shortest form (`4.5`, `1`, `1e+20`,
`nan`), decimals with their scale (`4.50`), booleans as `true`/`false`, dates as
`2024-11-07`, timestamps as their UTC instant `2024-11-07 14:00:00.000000Z` (a date or
timestamp outside the years 1-9999 is `invalid_string`). A nested value (list, struct,
map, union) or any other type where text belongs is `invalid_string`.

Lists, text: a value that starts with `[` is a JSON array (parsed with a nesting limit of
`schema.JSON_MAX_DEPTH`; strict JSON, so a raw tab inside a string is invalid); its string
items are kept as they are, numbers and booleans are rendered as text as native scalars
are (`2.0` is `2`, `true` is `true`), null items are dropped, a nested item (array,
object) makes the list invalid. Any other value is items joined by `;` or `|`, each item
trimmed, blank items dropped (a blank value is an empty list). Lists, native: a list of
any list type (list, large_list, fixed_size_list, list_view) whose items are text or
scalars: text items as they are, scalar items rendered as strings are, null items dropped;
a list holding a nested or unrenderable item is invalid. Either way a list of more than
`schema.LIST_MAX_ITEMS` items (after dropping nulls) is invalid. Otherwise `invalid_list`.

Any Arrow type: extension types are read as their storage, dictionaries and run-end
encoded arrays as their decoded values, string_view/binary_view/fixed_size_binary as
strings and binaries; a null-typed column is all nulls. A column whose type cannot hold
the field at all has every non-null value rejected with the field's parse code.

Binary text (CSV cells, JSON lone surrogates) must be valid UTF-8; `validate` rejects NUL
bytes, invalid UTF-8 and values over `schema.FIELD_MAX_BYTES` before any rule here runs.
"""

from __future__ import annotations

from .arrow import Problem
from .check import PARSE_CODES, check_column
from .scalars import render_text

# The face: what validation, refresh and the queue use. The Arrow plumbing the rules share
# (masks, casts, UTF-8 decoding) is rules/arrow.py, imported from there by what needs it.
__all__ = ["PARSE_CODES", "Problem", "check_column", "render_text"]
