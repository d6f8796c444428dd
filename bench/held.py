"""Bench: a run holding many duplicated keys at once (SPEC §4, memory stays bounded).

A file of N sessions followed by the same N sessions again (each key twice, N rows apart)
makes `enrich` hold every key's first version until its second is read. Each run is a child
process into a fresh SQLite database (the tutors loaded first, untimed), wall time and its
own peak RSS, at N = --rows/2 and --rows. Reference in the same run: the N sessions once
(nothing held). Past 32 MiB what is held goes to temporary files (tutormax_cli/held.py), so
the peak must not grow with N; everything held in memory took ~750 bytes a key.

    python -m bench --only held --rows 1000000
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.dataset import DATA

AS_OF = "2025-06-01T00:00:00Z"


def repeated(sessions: Path, keys: int, times: int) -> Path:
    """The first `keys` sessions of `sessions`, `times` over, one pass after the other; made
    once."""
    path = DATA / f"held-{keys}-x{times}.parquet"
    if path.exists():
        return path
    pf = pq.ParquetFile(sessions)
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, pf.schema_arrow) as out:
        for _ in range(times):
            left = keys
            for batch in pf.iter_batches(100_000):
                if left <= 0:
                    break
                out.write_batch(batch.slice(0, left))
                left -= batch.num_rows
    partial.rename(path)
    return path


def run(rows: int, dataset: Callable[..., dict[str, Path]], timed: Any, tutormax: Any) -> None:
    data = dataset(rows, max(rows // 10, 10), "parquet")
    sizes = (rows // 2, rows)
    print(f"\n== held: sessions each twice, far apart ({sizes[0]:,} and {sizes[1]:,} keys), "
          "into SQLite; peak RSS must not grow with the keys held ==")  # fmt: skip
    print(f"{'run':28} {'rows':>10} {'wall s':>7} {'rows/s':>10} {'peak MiB':>9}")
    first = None
    for keys in sizes:
        for label, times in (("each key once (reference)", 1), ("each key twice", 2)):
            with tempfile.TemporaryDirectory(prefix="tmbench-held-") as tmp:
                db = f"sqlite:///{tmp}/held.db"
                timed("tutors", tutormax("enrich", data["tutors"], "--db", db, "--as-of", AS_OF), 0)
                src = repeated(data["sessions"], keys, times)
                r = timed(
                    label, tutormax("enrich", src, "--db", db, "--as-of", AS_OF), keys * times
                )
            growth = ""
            if times == 2:
                first = first or r.rss_mib
                growth = f"{(r.rss_mib / first - 1) * 100:+.1f}% vs {sizes[0]:,} keys"
            print(f"{label:28} {keys * times:>10,} {r.seconds:7.2f} {r.rate:10,.0f} "
                  f"{r.rss_mib:9.0f} {growth}")  # fmt: skip
