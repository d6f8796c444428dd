"""One 64-bit hash per key, computed over Arrow's buffers (duplicates.key_hashes).

Simple tabulation hashing: a key's UTF-8 bytes b_0 … b_(n-1) hash to Σ T[i, b_i] mod 2^64,
where T holds a random 64-bit word for each (position, byte value), drawn once per process
from a secret seed. Two different keys differ at some position i (a byte against another
byte, or against no byte), and the word T[i, b_i] that only one of them adds is random
whatever the others are: they collide with probability 2^-64, the sum's top bits (which
partition the spills) are uniform, and no input can be built to collide, since the words
are the process's own. The empty key (and a null, which hashes like it) is 0. Keys longer
than MAX_BYTES (no valid key: SPEC caps ids at 50 characters) are hashed by Python's own
SipHash of their bytes, as every key used to be.

NumPy does the arithmetic a byte position at a time over the whole batch, and releases
the GIL while it does: the keys of a batch no longer hold the interpreter a row at a time
(README, Performance)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

MAX_BYTES = 256  # the longest key hashed by the words; longer ones by SipHash

_TABLE = np.random.default_rng(int.from_bytes(os.urandom(32), "little")).integers(
    0, 2**64, size=(MAX_BYTES, 256), dtype=np.uint64, endpoint=False
)
_INT64 = pa.int64()


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A 64-bit hash of each key (int64; a null hashes like the empty key)."""
    arr = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if not (pa.types.is_binary(arr.type) or pa.types.is_string(arr.type)):
        arr = arr.cast(pa.large_binary() if _large(arr.type) else pa.string())
    n = len(arr)
    if n == 0:
        return pa.array([], _INT64)
    starts, lengths, data = _layout(arr)
    out = _scratch(n, np.uint64)  # the result, in Arrow's pool like the batch around it
    out[:] = 0
    short = np.less_equal(lengths, MAX_BYTES, out=_scratch(n, np.bool_))
    longest = int(lengths[short].max()) if short.any() else 0
    if longest and len(data):
        _accumulate(out, data, starts, lengths, longest)
    for i in np.flatnonzero(~short).tolist():
        out[i] = np.int64(hash(arr[i].as_buffer().to_pybytes())).view(np.uint64)
    if arr.null_count:
        out[~np.asarray(arr.is_valid())] = 0
    return pa.Array.from_buffers(_INT64, n, [None, pa.py_buffer(out)])


def _large(t: pa.DataType) -> bool:
    return bool(pa.types.is_large_string(t) or pa.types.is_large_binary(t))


def _layout(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, length) of each value in the data buffer, and the data buffer as bytes."""
    n = len(arr)
    _, offsets_buf, data_buf = arr.buffers()[:3]
    width = 8 if _large(arr.type) else 4
    offsets = _scratch(n + 1, np.int64)
    offsets[:] = np.frombuffer(
        offsets_buf, np.int64 if width == 8 else np.int32, count=n + 1, offset=arr.offset * width
    )
    lengths = _scratch(n, np.int64)
    np.subtract(offsets[1:], offsets[:-1], out=lengths)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets[:-1], lengths, data


def _accumulate(
    out: np.ndarray, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, longest: int
) -> None:
    """out += Σ_i T[i, b_i] over each value's bytes, a position at a time (n values a
    step, into buffers allocated once: memory stays that of the column, whatever the keys'
    bytes)."""
    n = len(lengths)
    word = _scratch(n, np.uint64)
    if (lengths == longest).all():  # ids of one width: the bytes are an n × longest matrix
        first = int(starts[0])
        rows = data[first : first + n * longest].reshape(n, longest)
        for i in range(longest):
            np.take(_TABLE[i], rows[:, i], out=word)
            out += word
        return
    at, byte, ended = _scratch(n, np.int64), _scratch(n, np.uint8), _scratch(n, np.bool_)
    last = len(data) - 1
    for i in range(longest):
        np.add(starts, i, out=at)
        np.minimum(at, last, out=at)
        np.take(data, at, out=byte)
        np.take(_TABLE[i], byte, out=word)
        np.less_equal(lengths, i, out=ended)  # no byte at i: nothing added
        word[ended] = 0
        out += word


def _scratch(n: int, dtype: type[np.generic]) -> np.ndarray:
    """An n-element array in Arrow's memory pool, not the C heap: allocations of a batch's
    size on several threads fragment glibc's heaps (peak RSS +10 MiB on 1M + 1M rows),
    while Arrow's jemalloc pool returns them."""
    return np.frombuffer(pa.allocate_buffer(n * np.dtype(dtype).itemsize), dtype)
