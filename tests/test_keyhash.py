"""keyhash.key_hashes: equal keys hash alike however Arrow lays them out; different keys
do not collide; nulls hash like the empty key; the top bits that partition spills are
spread. The duplicate tests (test_duplicates, test_duplicate_index, test_held) run every
key through it too."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutormax_cli.keyhash import MAX_BYTES, key_hashes
from tutormax_cli.spill import PARTS, hash_part

KEYS = st.lists(
    st.one_of(
        st.none(),
        st.text(max_size=12),
        st.text(alphabet="ab\u00e9\U0001f600\x00", max_size=6),
        st.text(min_size=MAX_BYTES // 4 - 2, max_size=MAX_BYTES // 4 + 3),  # 1-4 bytes a char
        st.sampled_from(["", "a", "a\x00", "\x00", "S000000001", "S000000002"]),
    ),
    max_size=60,
)


def _oracle_equal(a: str | None, b: str | None) -> bool:
    return (a or "") == (b or "")


@settings(max_examples=300, deadline=None)
@given(KEYS, st.data())
def test_equal_keys_hash_alike_and_different_keys_do_not(keys, data):
    arr = pa.array(keys, pa.string())
    h = key_hashes(arr).to_pylist()
    assert len(h) == len(keys)
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            assert (h[i] == h[j]) == _oracle_equal(a, b), (a, b)
    # Any layout of the same keys: a slice, other string types, chunks.
    lo = data.draw(st.integers(0, len(keys)))
    hi = data.draw(st.integers(lo, len(keys)))
    assert key_hashes(arr.slice(lo, hi - lo)).to_pylist() == h[lo:hi]
    for t in (pa.large_string(), pa.binary(), pa.large_binary()):
        assert key_hashes(arr.cast(t)).to_pylist() == h
    chunked = pa.chunked_array([arr.slice(0, lo), arr.slice(lo)], pa.string())
    assert key_hashes(chunked).to_pylist() == h


def test_keys_around_the_longest_hashed_by_the_table():
    base = "x" * (MAX_BYTES - 2)
    keys = [base[:n] for n in range(MAX_BYTES - 8, MAX_BYTES - 2)]
    keys += [base + tail for tail in ("", "a", "ab", "abc", "abd", "ab\u00e9")]
    keys += ["y" * 100_000, "y" * 100_001, "\u00e9" * MAX_BYTES]
    h = key_hashes(pa.array(keys + keys)).to_pylist()
    assert h[: len(keys)] == h[len(keys) :]
    assert len(set(h)) == len(keys)


def test_nulls_and_empty_keys():
    assert key_hashes(pa.array([], pa.string())).to_pylist() == []
    h = key_hashes(pa.array([None, "", None], pa.string())).to_pylist()
    assert h[0] == h[1] == h[2]
    assert key_hashes(pa.array([None, None], pa.string())).to_pylist() == [h[0]] * 2
    # A null whose slot is not empty (Arrow allows it) still hashes like the empty key.
    values = pa.array(["abc", "de"], pa.string())
    offsets, data = values.buffers()[1:]
    validity = pa.array([False, True]).buffers()[1]
    odd = pa.Array.from_buffers(pa.string(), 2, [validity, offsets, data], null_count=1)
    assert key_hashes(odd).to_pylist() == [h[0], key_hashes(pa.array(["de"]))[0].as_py()]


def test_non_text_keys_are_hashed_as_their_text():
    ints = key_hashes(pa.array([1, 22, None, 1], pa.int64())).to_pylist()
    assert ints == key_hashes(pa.array(["1", "22", None, "1"])).to_pylist()
    text = pa.array(["a", "b", None, "a"])
    h = key_hashes(text).to_pylist()
    assert key_hashes(text.dictionary_encode()).to_pylist() == h
    assert key_hashes(text.cast(pa.string_view())).to_pylist() == h
    assert key_hashes(pa.nulls(2)).to_pylist() == [h[2]] * 2
    assert key_hashes(pa.chunked_array([], pa.string())).to_pylist() == []
    raw = key_hashes(pa.array([b"\xff\x00", b"\xff", b"\xff\x00"], pa.binary())).to_pylist()
    assert raw[0] == raw[2] != raw[1]


@pytest.mark.parametrize(
    "make",
    [lambda i: f"S{i:09d}", lambda i: str(i), lambda i: f"{i * 2654435761 % 2**32:x}-t"],
    ids=["fixed-width", "counter", "hex"],
)
def test_the_partitioning_bits_are_spread(make):
    n = 200_000
    h = key_hashes(pa.array([make(i) for i in range(n)])).to_numpy()
    assert len(np.unique(h)) == n
    counts = np.bincount(hash_part(h), minlength=PARTS)
    # A uniform hash puts n/PARTS ± a few hundred in each; a hash whose top bits follow
    # the keys' last characters leaves partitions empty.
    assert counts.min() > 0.9 * n / PARTS and counts.max() < 1.1 * n / PARTS
