"""Values as producers write them in text: timestamps in several offsets, spelled booleans,
lists in one cell. Each spelling is drawn per row from its own stream."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .compute import DAY, MIN, SEC, mod, null_where, pc, pick_slot
from .rng import Rng
from .vocab import IMPROVEMENT_AREAS, SUBJECT_NAMES

# (suffix, offset minutes, weight). "" = no offset, read as UTC (SPEC §2).
_OFFSETS = (
    ("Z", 0, 30),
    ("", 0, 14),
    ("+00:00", 0, 6),
    ("+05:30", 330, 14),
    ("-05:00", -300, 16),
    ("-08:00", -480, 8),
    ("+01:00", 60, 7),
    ("+09:00", 540, 5),
)
# (true, false, weight): spellings SPEC §1 accepts.
_BOOL_SPELLINGS = (
    ("true", "false", 40),
    ("1", "0", 20),
    ("yes", "no", 14),
    ("True", "False", 10),
    ("TRUE", "FALSE", 5),
    ("t", "f", 5),
    ("Yes", "No", 6),
)
# (prefix, separator, suffix, weight) of a list written in one CSV cell.
_LIST_STYLES = (
    ('["', '","', '"]', 45),
    ("", ";", "", 30),
    ("", "|", "", 25),
)
for _item in IMPROVEMENT_AREAS + SUBJECT_NAMES:
    assert not set(_item) & set('"\\;|'), _item  # must survive every list style unescaped


def render_timestamp(
    rng: Rng, stream: str, idx: pa.Array, us: pa.Array, *, bare_dates: bool = False
) -> pa.Array:
    """ISO-8601 text of UTC µs: several offsets, `T` or space, fraction only when non-zero."""
    which = rng.pick(f"{stream}.offset", idx, [w for *_, w in _OFFSETS])
    offset = pc.take(pa.array([m * MIN for _, m, _ in _OFFSETS], pa.int64()), which)
    suffix = pc.take(pa.array([s for s, _, _ in _OFFSETS]), which)
    local = pc.cast(pc.cast(pc.add(us, offset), pa.timestamp("us")), pa.string())
    # Arrow writes "YYYY-MM-DD HH:MM:SS.ffffff": cut the fraction to what the value has.
    text = pc.if_else(
        pc.equal(mod(us, SEC), 0),
        pc.utf8_slice_codeunits(local, 0, 19),
        pc.if_else(pc.equal(mod(us, 1000), 0), pc.utf8_slice_codeunits(local, 0, 23), local),
    )
    text = pc.if_else(
        rng.chance(f"{stream}.sep", idx, 0.7),
        pc.utf8_replace_slice(text, 10, 11, "T"),
        text,
    )
    out = pc.binary_join_element_wise(text, suffix, "")
    if bare_dates:  # a midnight-UTC instant written as a bare date (SPEC §2)
        date = pc.utf8_slice_codeunits(pc.cast(pc.cast(us, pa.timestamp("us")), pa.string()), 0, 10)
        out = pc.if_else(pc.equal(mod(us, DAY), 0), date, out)
    return out


def render_bool(rng: Rng, stream: str, idx: pa.Array, values: pa.Array) -> pa.Array:
    style = rng.pick(f"{stream}.spelling", idx, [w for *_, w in _BOOL_SPELLINGS])
    words = pa.array([w for t, f, _ in _BOOL_SPELLINGS for w in (t, f)])
    falsy = pc.subtract(1, pc.cast(values, pa.int64()))
    return pc.take(words, pc.add(pc.multiply(style, 2), falsy))


def join_list(
    slots: list[pa.Array], count: pa.Array, prefix: Any, sep: Any, suffix: Any
) -> pa.Array:
    """Per row, prefix + slots[0..count) joined by sep + suffix; `[]` when count is 0, null
    when it is null. prefix/sep/suffix are strings or per-row string arrays."""
    joined = [pa.scalar("[]", pa.string())]
    for k in range(1, len(slots) + 1):
        parts: list[Any] = [prefix]
        for j in range(k):
            if j:
                parts.append(sep)
            slot = slots[j]
            parts.append(pc.fill_null(slot, "") if isinstance(slot, pa.Array) else slot)
        parts.append(suffix)
        joined.append(pc.binary_join_element_wise(*parts, ""))
    return null_where(pc.is_null(count), pick_slot(joined, count))


def render_list(
    rng: Rng, stream: str, idx: pa.Array, slots: list[pa.Array], count: pa.Array
) -> pa.Array:
    """A list as one CSV cell: `["a","b"]`, `a;b` or `a|b`; `[]` when empty.

    Items are joined as they are (no space after the separator), so splitting on `;`/`|`
    gives back exactly the list the Parquet output holds.
    """
    style = rng.pick(f"{stream}.style", idx, [w for *_, w in _LIST_STYLES])
    prefix = pc.take(pa.array([p for p, *_ in _LIST_STYLES]), style)
    sep = pc.take(pa.array([s for _, s, *_ in _LIST_STYLES]), style)
    suffix = pc.take(pa.array([x for _, _, x, _ in _LIST_STYLES]), style)
    return join_list(slots, count, prefix, sep, suffix)
