"""`tutormax enrich` as a library call: files in, enriched files / database rows and rejects out.

Everything that can be checked before the first batch is (files, kinds, columns, options,
the database), so such an error writes nothing. Progress reaches the caller by callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import errors as E
from .fields import Context, fields_for
from .files import EXTENSIONS, RawBatch, Source, check_format, detect_format, prefetch
from .pipeline import DERIVED_NAMES, Pipeline, SessionStarts, Store
from .schema import KIND_ORDER
from .writers import BatchWriter, RejectsWriter


@dataclass(frozen=True)
class EnrichOptions:
    paths: list[Path]
    as_of: datetime
    timezone: str = "UTC"
    out: Path | None = None
    kind: str | None = None
    format: str | None = None  # output format; also the input format of unknown extensions
    rejects: Path | None = None
    batch_size: int = 50_000
    dry_run: bool = False
    atomic: bool = False
    max_errors: int | None = None


@dataclass
class FileSummary:
    source: str
    kind: str
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    output: str | None = None


@dataclass
class RunSummary:
    files: list[FileSummary] = field(default_factory=list)
    rejects_file: str | None = None
    database: str | None = None  # masked URL, or None with --no-db
    dry_run: bool = False
    stopped: str | None = None  # why the run stopped early (--max-errors)
    as_of: str = ""
    timezone: str = "UTC"

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def exit_code(self) -> int:
        return E.EXIT_REJECTS if self.rejected else E.EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejected"] = self.rejected
        d["exit_code"] = self.exit_code
        return d


# (source, kind, rows done in this file, fraction of the file read)
Progress = Callable[[str, str, int, float], None]


class MaxErrorsReached(Exception):
    pass


class _DryRunRollback(Exception):
    pass


def plan_outputs(opts: EnrichOptions, sources: list[Source]) -> dict[Path, tuple[Path, str]]:
    """Where each input's enriched rows go (SPEC §4), checked before anything is written."""
    if opts.out is None:
        return {}
    if opts.format:
        check_format(opts.format)
    if len(sources) == 1 and not opts.out.is_dir() and not str(opts.out).endswith("/"):
        fmt = opts.format or detect_format(opts.out)
        return {sources[0].path: (opts.out, fmt)}
    if opts.out.exists() and not opts.out.is_dir():
        raise E.UsageError(f"--out {opts.out}: with several inputs --out must name a directory")
    plan: dict[Path, tuple[Path, str]] = {}
    for s in sources:
        fmt = opts.format or s.format
        name = s.path.name if not opts.format else s.path.stem + EXTENSIONS[fmt]
        target = opts.out / name
        if any(t == target for t, _ in plan.values()):
            raise E.UsageError(f"--out {opts.out}: two inputs would both write {target.name}")
        plan[s.path] = (target, fmt)
    for src, (target, _) in plan.items():
        if target.resolve() == src.resolve():
            raise E.UsageError(f"--out {target}: would overwrite its own input")
    return plan


def default_rejects_path(opts: EnrichOptions) -> Path:
    if opts.rejects is not None:
        return opts.rejects
    if opts.out is None:
        return Path("tutormax.rejects.jsonl")
    if opts.out.is_dir() or len(opts.paths) > 1 or str(opts.out).endswith("/"):
        return opts.out / "rejects.jsonl"
    return opts.out.with_name(opts.out.stem + ".rejects.jsonl")


def open_sources(opts: EnrichOptions) -> list[Source]:
    if opts.batch_size < 1:
        raise E.UsageError(f"--batch-size {opts.batch_size}: must be at least 1")
    if opts.max_errors is not None and opts.max_errors < 0:
        raise E.UsageError(f"--max-errors {opts.max_errors}: must be 0 or more")
    sources = [Source(p, opts.format, opts.kind) for p in opts.paths]
    # Parents before children, so keys and the feedback join resolve within the run.
    return sorted(sources, key=lambda s: KIND_ORDER.index(s.kind.name))


def run_enrich(
    opts: EnrichOptions,
    connect: Callable[[], Any] | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Enrich every input; `connect` opens the Store (None: --no-db). Fatal: TutormaxError.

    Inputs, outputs and options are checked first, then the database is opened: an error in
    any of them raises before anything is written.
    """
    sources = open_sources(opts)
    outputs = plan_outputs(opts, sources)
    store = connect() if connect is not None else None
    try:
        return _run(opts, sources, outputs, store, progress)
    finally:
        if store is not None:
            store.close()


def _run(
    opts: EnrichOptions,
    sources: list[Source],
    outputs: dict[Path, tuple[Path, str]],
    store: Store | None,
    progress: Progress | None,
) -> RunSummary:
    rejects = RejectsWriter(default_rejects_path(opts))
    summary = RunSummary(dry_run=opts.dry_run, as_of=opts.as_of.isoformat(), timezone=opts.timezone)
    ctx = Context(as_of=opts.as_of, timezone=opts.timezone)
    # The feedback join needs this run's sessions only when no database holds them: keeping
    # them costs ~25 bytes a session, so only a --no-db run with feedback pays it.
    joins = store is None and any(s.kind.name == "feedback" for s in sources)
    sessions = SessionStarts() if joins else None
    writers: list[BatchWriter] = []
    try:
        with _run_transaction(store, opts):
            for src in sources:
                target = outputs.get(src.path)
                writer = BatchWriter(*target) if target else None
                if writer:
                    writers.append(writer)
                fs = FileSummary(str(src.path), src.kind.name, output=target and str(target[0]))
                summary.files.append(fs)
                pipe = Pipeline(
                    src.kind,
                    store=store,
                    sessions=sessions,
                    input_columns=src.columns if writer else None,
                )
                _run_file(src, pipe, ctx, opts, fs, writer, rejects, summary, progress)
                if writer:
                    writer.commit(_empty_output_schema(src))
    except MaxErrorsReached:
        summary.stopped = f"stopped: more than {opts.max_errors} rows rejected"
        if opts.atomic:
            summary.stopped += "; --atomic: the database was left as it was"
        for w in writers:
            w.commit() if not opts.atomic else w.abort()
    except _DryRunRollback:
        for w in writers:
            w.commit()
    except E.TutormaxError as exc:  # struck mid-run (the database went away, a corrupt page)
        for w in writers:
            w.abort()
        exc.message += _committed_note(summary, store, opts)
        raise
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        rejects.close()
    summary.rejects_file = str(rejects.path) if rejects.count else None
    return summary


def _committed_note(summary: RunSummary, store: Store | None, opts: EnrichOptions) -> str:
    if store is None:
        return ""
    if opts.atomic or opts.dry_run:
        return " (nothing was committed: the run was one transaction)"
    done = sum(f.inserted + f.updated for f in summary.files)
    return f" ({done:,} rows were committed before it, in whole batches)"


@contextmanager
def _run_transaction(store: Store | None, opts: EnrichOptions) -> Iterator[None]:
    """--atomic: the whole run is one transaction. --dry-run: one transaction, rolled back."""
    if store is None or not (opts.atomic or opts.dry_run):
        yield
        return
    with store.transaction():
        if opts.dry_run:
            store.init_schema()  # inside the rolled-back transaction: DDL included
        yield
        if opts.dry_run:
            raise _DryRunRollback


def _run_file(
    src: Source,
    pipe: Pipeline,
    ctx: Context,
    opts: EnrichOptions,
    fs: FileSummary,
    writer: BatchWriter | None,
    rejects: RejectsWriter,
    summary: RunSummary,
    progress: Progress | None,
) -> None:
    started = time.perf_counter()
    try:
        for rb in prefetch(src.batches(opts.batch_size)):
            found = _malformed(rb)
            if rb.table.num_rows:
                res = pipe.process(rb.table, ctx)
                for r in res.rejected:
                    values = rb.values(r.index)
                    errors = [e.as_dict() for e in r.errors]
                    found.append((rb.row_number(r.index), values, errors))
                fs.read += rb.table.num_rows
                fs.accepted += len(res.accepted) + res.duplicates
                fs.rejected += len(res.rejected)
                fs.duplicates += res.duplicates
                fs.inserted += res.writes.inserted
                fs.updated += res.writes.updated
                fs.unchanged += res.writes.unchanged
                if writer is not None and res.output is not None:
                    writer.write(res.output)
            fs.read += len(rb.malformed)
            fs.rejected += len(rb.malformed)
            for row, values, errors in sorted(found, key=lambda f: f[0] or 0):
                rejects.write(str(src.path), row, values, errors)
            rejects.flush()
            if progress:
                progress(str(src.path), src.kind.name, fs.read, rb.done)
            if opts.max_errors is not None and summary.rejected > opts.max_errors:
                raise MaxErrorsReached
    finally:
        fs.seconds = round(time.perf_counter() - started, 3)


def _malformed(rb: RawBatch) -> list[tuple[int | None, Any, list[dict[str, Any]]]]:
    """Rows that could not be split into fields, as rejects: the raw text is the value."""
    return [
        (
            m.row if m.row > 0 else None,
            {"_raw": m.text},
            [{"field": "_row", "code": E.MALFORMED_ROW, "message": m.message}],
        )
        for m in rb.malformed
    ]


def _empty_output_schema(src: Source) -> pa.Schema:
    """Header for an output with no accepted rows: input columns, then the derived fields."""
    cols = src.kind.column_names
    fields_ = [
        pa.field(c, src.kind.column(c).type.arrow if c in cols else pa.string())
        for c in src.columns
        if c not in DERIVED_NAMES
    ]
    fields_ += [pa.field(f.name, f.type) for f in fields_for(src.kind.name)]
    return pa.schema(fields_)
