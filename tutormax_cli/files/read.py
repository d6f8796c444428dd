"""An input opened and checked before any batch: readable, format, kind, header."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from .. import errors as E
from ..errors import InputError
from ..fields import fields_for
from ..pipeline import DERIVED_NAMES
from ..schema import KINDS, Kind, check_columns, get_kind, infer_kind
from .batch import RawBatch, _finishing
from .csv import CSV_HEADER_MAX_BYTES
from .formats import EXTENSIONS, TABLE, detect_format
from .inputs import _Input, is_stdin

HEAD_BYTES = {"csv": CSV_HEADER_MAX_BYTES + 1, "parquet": 4}


class Source:
    """One input, checked at open (readable, format, kind, required columns).

    `path` is the input as given (`-` for stdin): the name the summary and the rejects file
    show. `name` is its file name without a compression suffix (`stdin.<ext>` for stdin)."""

    def __init__(
        self,
        path: Path,
        fmt: str | None = None,
        kind: str | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.path = path
        if is_stdin(path):
            missing = [o for o, v in (("--kind", kind), ("--format", fmt)) if not v]
            if missing:
                raise E.UsageError(
                    f"-: reading stdin needs {' and '.join(missing)} "
                    "(a stream has no extension to tell them by)"
                )
        self.format = detect_format(path, fmt)
        # A stream's head is copied and checked before the rest (inputs.py): what the CSV
        # header check reads, Parquet's magic number; JSON Lines needs its first record.
        self.input = _Input(path, HEAD_BYTES.get(self.format), stop)
        try:
            self._check(kind)
        except BaseException:
            self.input.close()
            raise

    def _check(self, kind: str | None) -> None:
        path = self.input.label  # `stdin` for `-`, as the readers' own messages say
        if self.input.codec and self.format == "parquet":
            raise InputError(
                f"{path}: a compressed Parquet file is not read: Parquet compresses inside "
                "the file and needs to seek in it; decompress it first"
            )
        if self.input.codec:  # a compressed stream's head cannot be read alone
            self.input.finish()
        base = f"stdin{EXTENSIONS[self.format]}" if self.input.stdin else self.input.base
        self.name = base
        self.stem = Path(base).stem
        if self.format == "parquet":
            with self.input.open() as fh:
                if fh.read(4) != b"PAR1":
                    raise InputError(
                        f"{path}: not a readable Parquet file: it does not begin with PAR1"
                    )
            self.input.finish()
        self.columns = TABLE[self.format].reader.header(self.input)
        if self.format == "jsonl" and not self.columns:  # no record: an empty export
            if not kind:
                raise InputError(
                    f"{path}: no JSON object with a key on any line (an empty export, or only "
                    "{}): pass --kind to read it"
                )
            self.columns = list(get_kind(kind).column_names)
        self.kind: Kind = get_kind(kind) if kind else _infer(self.format, self.columns, path)
        if self.format == "jsonl":
            # A JSON record may leave any key out (an export drops its nulls): a missing one
            # is that record's error, never the file's, and a field of the kind that only
            # later records carry is not lost. The columns: the first record's keys, then
            # every other input field of the kind.
            first = set(self.columns)
            self.columns += [c for c in self.kind.column_names if c not in first]
        check_columns(self.kind, self.columns, path)
        self.input.finish()

    def batches(self, batch_size: int) -> Iterator[RawBatch]:
        reader = TABLE[self.format].reader
        return _finishing(reader.batches(self.input, batch_size, self.kind, self.columns))

    def empty_output_schema(self) -> pa.Schema:
        """An output with no accepted rows: its input columns, then the derived fields."""
        cols = self.kind.column_names
        fields_ = [
            pa.field(c, self.kind.column(c).type.arrow if c in cols else pa.string())
            for c in self.columns
            if c not in DERIVED_NAMES
        ]
        fields_ += [pa.field(f.name, f.type) for f in fields_for(self.kind.name)]
        return pa.schema(fields_)

    def close(self) -> None:
        """Free the spool of stdin (also freed when the Source is collected, or at exit)."""
        self.input.close()


def _infer(fmt: str, columns: list[str], path: str) -> Kind:
    """The kind the columns tell. A JSON Lines file's are its first record's keys, which
    may lack a required one: there, the kind whose signature they hold, if only one does."""
    try:
        return infer_kind(columns, path)
    except InputError:
        if fmt != "jsonl":
            raise
        fits = [k for k in KINDS.values() if set(k.signature) <= set(columns)]
        if len(fits) != 1:
            raise
        return fits[0]
