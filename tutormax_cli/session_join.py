"""The feedback's session join on disk, for runs with more sessions than memory should hold.

A `--no-db` run finds a feedback's session start among the sessions of the same run (SPEC
§3). In memory that costs about 70 bytes a session (parents.SessionStarts); past
parents.MEMORY_SESSIONS sessions the run goes out of core instead, as a partitioned hash join:

1. the sessions go to disk, partitioned by key hash, with their order in the run;
2. before the feedback is processed, a pre-pass over its `session_id` column sends each
   row's key and run position to disk, partitioned by the same hash;
3. partition by partition, each key's stored version (newest `updated_at`, else the last)
   is found and the feedback rows are matched to it on the key itself, exactly;
4. the starts found are laid out by run position in one unlinked temporary file of int64
   (8 bytes a feedback row), which each feedback batch then reads for its own rows.

Memory stays about one partition of each side (1/64 of the run), whatever the run's size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import suppress
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .duplicates import SEQ, best_of_each_key, repeats
from .interrupts import uninterrupted
from .spill import PARTS, Spill, hash_part, temp_error

_UTC_US = pa.timestamp("us", tz="UTC")
_NONE = np.iinfo(np.int64).min  # no session found (no valid start is this far back)
_SESSIONS = pa.schema(
    [
        ("h", pa.int64()),
        ("k", pa.string()),
        ("s", _UTC_US),
        ("updated_at", _UTC_US),
        (SEQ, pa.int64()),
    ]
)
_PROBES = pa.schema([("k", pa.string()), ("pos", pa.int64())])
_FOUND = pa.schema([("pos", pa.int64()), ("s", pa.int64())])


class SessionJoin:
    """remember (sessions, in run order), then probe (feedback keys), join once, starts_at."""

    def __init__(self, hash_keys: Callable[[pa.Array], pa.Array]) -> None:
        self._hash_keys = hash_keys
        self._sessions: Spill | None = Spill(_SESSIONS)
        self._probes: Spill | None = Spill(_PROBES)
        self._seen = 0  # sessions remembered so far: the next one's order
        self._end = 0  # one past the last feedback position probed
        self._starts: IO[bytes] | None = None  # laid out by position (unlinked: no name)

    @property
    def joined(self) -> bool:
        return self._starts is not None

    def remember(
        self, hashes: np.ndarray, keys: pa.Array, starts: pa.Array, updated_at: pa.Array
    ) -> None:
        assert self._sessions is not None, "sessions come before the join"
        n = len(keys)
        seq = pa.array(np.arange(self._seen, self._seen + n, dtype=np.int64))
        self._seen += n
        columns = [pa.array(hashes), keys.cast(pa.string()), starts, updated_at, seq]
        table = pa.table(columns, schema=_SESSIONS)
        self._sessions.append(table, hash_part(hashes))

    def probe(self, keys: pa.Array, positions: pa.Array) -> None:
        """Feedback rows (their valid session_id and run position), in any order."""
        assert self._probes is not None, "probes come before the join"
        if not len(keys):
            return
        keys = keys.cast(pa.string())
        hashes = self._hash_keys(keys).to_numpy()
        self._probes.append(pa.table([keys, positions], schema=_PROBES), hash_part(hashes))
        self._end = max(self._end, int(pc.max(positions).as_py()) + 1)

    def join(self) -> None:
        sessions, probes = self._sessions, self._probes
        assert sessions is not None and probes is not None, "a run joins once"
        size = max(1, -(-self._end // PARTS))  # feedback positions a range partition
        found = Spill(_FOUND)
        try:
            for p in range(PARTS):
                wanted = probes.read(p)
                if not wanted.num_rows:
                    continue
                best = _stored(sessions.read(p))
                starts = pc.take(best["s"], pc.index_in(wanted["k"], value_set=best["k"]))
                hit = pc.is_valid(starts)
                pos = wanted["pos"].filter(hit)
                table = pa.table([pos, starts.filter(hit).cast(pa.int64())], schema=_FOUND)
                found.append(table, pos.to_numpy() // size)
            sessions.close()
            probes.close()
            self._sessions = self._probes = None
            # Kept open until close(); unlinked, so it goes with the process.
            out = self._starts = tempfile.TemporaryFile(prefix="tutormax-join-")  # noqa: SIM115
            for r in range(-(-self._end // size) if self._end else 0):
                lo = r * size
                laid = np.full(min(self._end, lo + size) - lo, _NONE, np.int64)
                part = found.read(r)
                laid[part["pos"].to_numpy() - lo] = part["s"].to_numpy()
                out.write(laid.tobytes())
            out.flush()
        except OSError as exc:
            raise temp_error(exc) from None
        finally:
            found.close()

    def starts_at(self, positions: pa.Array) -> pa.Array:
        """The session start of the feedback at each run position (null: none found).
        Safe to call from several threads at once."""
        assert self._starts is not None, "join first"
        pos = positions.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if not len(pos):
            return pa.array([], _UTC_US)
        lo, hi = int(pos.min()), int(pos.max()) + 1
        hi = min(hi, self._end)
        raw = os.pread(self._starts.fileno(), (hi - lo) * 8, lo * 8) if hi > lo else b""
        laid = np.frombuffer(raw, np.int64)
        inside = pos < hi
        values = np.full(len(pos), _NONE, np.int64)
        values[inside] = laid[pos[inside] - lo]
        return pa.array(values, pa.int64(), mask=values == _NONE).cast(_UTC_US)

    def close(self) -> None:
        uninterrupted(self._close)

    def _close(self) -> None:
        for spill in (self._sessions, self._probes):
            if spill is not None:
                spill.close()
        if self._starts is not None:
            with suppress(OSError):  # what a full disk kept in its buffer: thrown away
                self._starts.close()
            self._starts = None


def _stored(sessions: pa.Table) -> pa.Table:
    """The version of each session a database would store (one row a key); the usual
    partition repeats no key, which its hashes tell faster than ranking its rows."""
    return best_of_each_key(sessions, "k")[0] if repeats(sessions) else sessions
