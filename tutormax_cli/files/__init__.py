"""The files door: `tutormax enrich` on CSV, Parquet and JSON Lines (SPEC §4).

inputs.py (where bytes come from: files, compressed files, stdin) → csv.py / parquet.py /
jsonl.py (readers, one per format, listed in formats.py) → batch.py (`RawBatch`) →
read.py (`Source`: an input checked before any batch) → run.py (the run, batch by batch,
through pipeline.Pipeline) → write.py and encode.py (outputs), rejects.py (the rejects
file); plan.py holds the run's options, its planned outputs and its summary.
"""

from .batch import RawBatch
from .formats import check_format, detect_format
from .inputs import is_stdin
from .plan import EnrichOptions, FileSummary, RunSummary, default_rejects_path
from .read import Source
from .run import run_enrich
from .write import BatchWriter, writes_stdout

__all__ = [
    "BatchWriter",
    "EnrichOptions",
    "FileSummary",
    "RawBatch",
    "RunSummary",
    "Source",
    "check_format",
    "default_rejects_path",
    "detect_format",
    "is_stdin",
    "run_enrich",
    "writes_stdout",
]
