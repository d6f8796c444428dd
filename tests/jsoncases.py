"""JSON values for property tests, and equality that tells 1 from 1.0 (json_bounds, envelopes)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st


def same_typed(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 is not 1.0; NaN is NaN; key order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_typed(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_typed(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(-(2**63) - 2, 2**64 + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]))
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
