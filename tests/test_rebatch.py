"""batch._rebatch: the rows of a stream of tables re-cut into batches, none lost, reordered
or duplicated; exact batches when cutting, whole input tables joined when not (Parquet)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tutormax_cli.files.batch import _rebatch


def _tables(sizes: list[int]) -> list[pa.Table]:
    out, n = [], 0
    for k in sizes:
        out.append(pa.table({"v": pa.array(range(n, n + k), pa.int64())}))
        n += k
    return out


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), max_size=12),
    size=st.integers(1, 30),
    max_bytes=st.sampled_from([1 << 30, 8 * 10, 8 * 25]),
    cut=st.booleans(),
)
def test_rebatch_keeps_every_row_in_order_within_the_bounds(sizes, size, max_bytes, cut) -> None:
    tables = _tables(sizes)
    batches = list(_rebatch(iter(tables), size, max_bytes, cut=cut))
    rows = [v for b in batches for v in b["v"].to_pylist()]
    assert rows == list(range(sum(sizes)))
    assert all(b.num_rows for b in batches)
    assert all(b.num_rows <= size for b in batches)
    if cut and max_bytes == 1 << 30:  # only the byte budget may end a batch early
        assert all(b.num_rows == size for b in batches[:-1])
    if not cut:  # an input table is split only when it alone is bigger than a batch
        edges = {0}
        for k in sizes:
            edges.add(max(edges) + k)
        at = 0
        for b in batches:
            starts_inside = at not in edges
            assert not starts_inside or any(k > size for k in sizes)
            at += b.num_rows


def test_without_cutting_even_pieces_stay_whole() -> None:
    """A 100,000-row row group read as seven even pieces of 14,286 rows (at most 16,000):
    each is a batch of its own, none joined from two."""
    pieces = _tables([14_286] * 6 + [14_284])
    batches = list(_rebatch(iter(pieces), 16_000, cut=False))
    assert [b.num_rows for b in batches] == [14_286] * 6 + [14_284]
    assert all(b["v"].num_chunks == 1 for b in batches)
