"""`tutormax enrich` as a library call: files in, enriched files / database rows and rejects out.

Everything that can be checked before the first batch is (files, kinds, columns, options,
the database), so such an error writes nothing. Progress reaches the caller by callback.

Counts (per file): read = accepted + rejected + duplicates; with a database accepted =
inserted + updated + unchanged. A duplicated key is decided when its last version has been
read (see pipeline.py), so its counts may land while a later file of its kind is read."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import errors as E
from ..duplicates import DuplicateCounter, DuplicateIndex
from ..fields import Context
from ..interrupts import held, uninterrupted
from ..ordered import in_order
from ..parents import SessionStarts
from ..pipeline import BatchResult, BatchStore, Pipeline
from ..validate import positions
from .batch import Peekable, Places, RawBatch, prefetch
from .plan import (
    EnrichOptions,
    FileSummary,
    Progress,
    RunSummary,
    check_written,
    default_rejects_path,
    open_sources,
    plan_outputs,
)
from .prepass import duplicate_index, join_sessions
from .read import Source
from .rejects import RejectsWriter, malformed_rows, rejected_rows
from .write import BatchWriter

BATCH_WORKERS = min(2, os.cpu_count() or 1)  # batches processed side by side (no database)


class MaxErrorsReached(Exception):
    pass


class _DryRunRollback(Exception):
    pass


def run_enrich(
    opts: EnrichOptions,
    connect: Callable[[], Any] | None = None,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunSummary:
    """Enrich every input; `connect` opens the Store (None: --no-db). Fatal: TutormaxError.

    Inputs, outputs and options are checked first, then the database is opened: an error in
    any of them raises before anything is written. `stop` is asked after every batch (the
    CLI's Ctrl-C): when it says so, the run ends there with `errors.Interrupted`, whose
    message says exactly what each file committed.
    """
    sources = open_sources(opts, stop)
    outputs = plan_outputs(opts, sources)
    check_written(opts, sources, outputs)
    store = connect() if connect is not None else None
    try:
        return _Run(opts, sources, outputs, store, progress, stop).run()
    finally:
        if store is not None:
            store.close()


class _Run:
    """One enrich run: the kinds in order, each kind's files in order, batch by batch."""

    def __init__(
        self,
        opts: EnrichOptions,
        sources: list[Source],
        outputs: dict[Path, tuple[Path, str]],
        store: BatchStore | None,
        progress: Progress | None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.opts, self.sources, self.outputs = opts, sources, outputs
        self.store, self.progress, self.stop = store, progress, stop
        # A dry run writes nothing at all: rejects are counted, outputs only named.
        self.rejects = RejectsWriter(default_rejects_path(opts), dry_run=opts.dry_run)
        self.summary = RunSummary(
            dry_run=opts.dry_run, as_of=opts.as_of.isoformat(), timezone=opts.timezone
        )
        self.ctx = Context(as_of=opts.as_of, timezone=opts.timezone)
        # The feedback join needs this run's sessions only when no database holds them (in
        # memory up to parents.MEMORY_SESSIONS, then on disk), so only --no-db with feedback.
        joins = store is None and any(s.kind.name == "feedback" for s in sources)
        self.sessions = SessionStarts() if joins else None
        self.writers: list[BatchWriter] = []
        self.finished: list[BatchWriter] = []  # done, moved into place when the run commits
        self.outputs_committed = False
        self._late: list[tuple[RawBatch, BatchResult | None]] = []  # see _processed
        self._places = Places()  # the batches of the kind being run, for _account

    def run(self) -> RunSummary:
        try:
            with _run_transaction(self.store, self.opts):
                for kind in dict.fromkeys(s.kind.name for s in self.sources):
                    self._kind([s for s in self.sources if s.kind.name == kind])
            self._commit_outputs()
        except MaxErrorsReached:
            # Not "some rows rejected, the rest done" (exit 1): the rest was not done. Exit 2,
            # as for any fault that stops a run: no output file half-written under its real
            # name, the rejects file kept (it says why), the committed rows counted.
            self._abort_outputs()
            limit = self.opts.max_errors
            self.summary.stopped = f"stopped: more than {limit:,} rows rejected (--max-errors)"
            if self.opts.atomic and self.store is not None:
                self.summary.stopped += (
                    "; --atomic: nothing was written but the rejected rows, to say why"
                )
                self._stopped(self.summary.stopped)  # rolled back: none of it is stored
            else:
                self.summary.stopped += self._committed_note()
        except _DryRunRollback:
            self._commit_outputs()
        except E.TutormaxError as exc:  # struck mid-run (the database went away, a full disk)
            self._abort_outputs()
            exc.message += self._committed_note()
            exc.summary = self._stopped(exc.message)
            raise
        except KeyboardInterrupt:
            self._abort_outputs()
            stop = E.Interrupted(self._committed_note(per_file=True))
            stop.summary = self._stopped(stop.message)
            raise stop from None
        except BaseException:
            self._abort_outputs()
            raise
        finally:
            self.rejects.close()
            if self.sessions is not None:
                self.sessions.close()
        written = self.rejects.count and not self.opts.dry_run
        self.summary.rejects_file = str(self.rejects.path) if written else None
        return self.summary

    # -- one kind -------------------------------------------------------------------------------

    def _kind(self, sources: list[Source]) -> None:
        index = None
        if self.store is not None:
            index = duplicate_index(sources, self.opts.batch_size, self.stop)
        try:
            self._kind_with(sources, index)
        finally:
            if index is not None:
                index.close()

    def _kind_with(self, sources: list[Source], index: DuplicateIndex | None) -> None:
        kind = sources[0].kind
        if kind.name == "feedback" and self.sessions is not None:
            self.sessions.seal()  # every session was read
            if self.sessions.on_disk:
                join_sessions(self.sessions, sources, self.opts.batch_size, self.stop)
        counter = DuplicateCounter() if self.store is None else None
        pipe = Pipeline(kind, store=self.store, sessions=self.sessions, duplicates=index)
        seq0, self._places = 0, Places()
        try:
            try:
                for src in sources:
                    seq0 = self._file(src, pipe, seq0, counter)
            finally:
                if counter is not None:  # --no-db: duplicates are only counted
                    for g, n in counter.finish().items():
                        fs = self.summary.files[g]
                        fs.accepted -= n
                        fs.duplicates += n
            self._account(pipe.finish(self.ctx))
        finally:
            pipe.close()

    # -- one file -------------------------------------------------------------------------------

    def _file(
        self, src: Source, pipe: Pipeline, seq0: int, counter: DuplicateCounter | None
    ) -> int:
        """Every batch of one input; returns the run position after its last row."""
        target = self.outputs.get(src.path)
        writer = BatchWriter(*target) if target and not self.opts.dry_run else None
        if writer:
            self.writers.append(writer)
        group = len(self.summary.files)
        fs = FileSummary(str(src.path), src.kind.name, output=target and str(target[0]))
        self.summary.files.append(fs)
        pipe.input_columns = src.columns if writer else None
        started = time.perf_counter()
        raw = Peekable(prefetch(src.batches(self.opts.batch_size)))
        processed = self._processed(raw, pipe, seq0, group)
        try:
            for rb, res in processed:
                self._place(pipe, seq0, rb, res)
                seq0 += self._take(src, fs, group, pipe, rb, res, counter, writer)
                self._check_max_errors(pipe, lambda: src is not self.sources[-1] or raw.more())
                if self.stop is not None and self.stop():
                    raise KeyboardInterrupt
        finally:
            processed.close()
            raw.close()  # the reader thread stops now, not when `raw` is collected
            late, self._late = self._late, []
            for rb, res in late:  # committed by the database while the run stopped
                self._place(pipe, seq0, rb, res)
                seq0 += self._take(src, fs, group, pipe, rb, res, counter, writer)
            fs.seconds = round(time.perf_counter() - started, 3)
        if writer is not None:
            writer.finish(src.empty_output_schema())
            self.finished.append(writer)
        return seq0

    def _take(
        self,
        src: Source,
        fs: FileSummary,
        group: int,
        pipe: Pipeline,
        rb: RawBatch,
        res: BatchResult | None,
        counter: DuplicateCounter | None,
        writer: BatchWriter | None,
    ) -> int:
        """Account one processed batch, in input order; returns its rows."""
        found = malformed_rows(rb)
        if res is not None:
            pipe.remember(res)  # in batch order
            found += rejected_rows(rb, res)
            self._count(fs, rb, res)
            if counter is not None and res.keys is not None:
                counter.add(res.keys, group, res.key_hashes)
            if writer is not None and res.output is not None:
                writer.write(res.output)
        fs.read += len(rb.malformed)
        fs.rejected += len(rb.malformed)
        by_code = fs.rejected_by_code
        for row, values, errors in sorted(found, key=lambda f: f[0] or 0):
            self.rejects.write(str(src.path), row, values, errors)
            for code in {e["code"] for e in errors}:
                by_code[code] = by_code.get(code, 0) + 1
        self.rejects.flush()
        if self.progress:
            self.progress(str(src.path), src.kind.name, fs.read, rb.done)
        return rb.table.num_rows if res is not None else 0

    def _processed(
        self, batches: Iterator[RawBatch], pipe: Pipeline, seq0: int, group: int
    ) -> Generator[tuple[RawBatch, BatchResult | None], None, None]:
        """Each batch with its result (None for a batch of no rows), in input order.

        BATCH_WORKERS batches are processed side by side (a batch's work is Arrow's and the
        database's, which run without the GIL) when they are independent: without a
        database, a batch is a pure function of its rows, and what the run remembers
        (sessions, duplicate counts, outputs, rejects) is taken in order by the caller;
        with PostgreSQL, each batch is its own transaction on its own connection, when no
        key of the kind occurs twice in the run (nothing is held from batch to batch) and
        the run is not one transaction (--atomic, --dry-run). Otherwise one at a time.
        A batch a database committed is always counted, even if the run stops first."""

        def work(rb: RawBatch, at: int) -> BatchResult | None:
            if not rb.table.num_rows:
                return None
            return pipe.process(rb.table, self.ctx, seq0=at, group=group)

        def numbered() -> Iterator[tuple[RawBatch, int]]:
            at = seq0
            for rb in batches:
                yield rb, at
                at += rb.table.num_rows

        workers = BATCH_WORKERS if self._side_by_side(pipe) else 1
        # What a database committed while the run stopped is counted (see _file).
        late = self._late if self.store is not None else None
        return in_order(work, numbered(), workers, late)

    def _side_by_side(self, pipe: Pipeline) -> bool:
        if self.store is None:
            return True
        return (
            self.store.concurrent_writes
            and not pipe.duplicates
            and not (self.opts.atomic or self.opts.dry_run)
        )

    def _count(self, fs: FileSummary, rb: RawBatch, res: BatchResult) -> None:
        fs.read += rb.table.num_rows
        fs.rejected += len(res.rejected)
        fs.accepted += len(res.accepted) - res.held  # held versions count once settled
        fs.inserted += res.writes.inserted
        fs.updated += res.writes.updated
        fs.unchanged += res.writes.unchanged
        self._account(res)

    def _check_max_errors(self, pipe: Pipeline, more: Callable[[], bool]) -> None:
        """Stop once more than --max-errors rows are rejected, if anything is left to read
        (`more`): past the last batch there is nothing to stop, and the run ends as one
        that rejected rows (exit 1), what is in flight included."""
        limit = self.opts.max_errors
        if limit is None or self.summary.rejected <= limit or not more():
            return
        # What was read is processed: held versions are settled, so every row read has its
        # verdict (with --atomic they are rolled back with the rest of the run).
        self._account(pipe.finish(self.ctx))
        raise MaxErrorsReached

    def _account(self, res: BatchResult) -> None:
        """Credit held versions settled in this batch to the files they came from."""
        files = self.summary.files
        for g, counts in res.settled.stored:
            fs = files[g]
            fs.accepted += counts.total
            fs.inserted += counts.inserted
            fs.updated += counts.updated
            fs.unchanged += counts.unchanged
        for g, _seq in res.settled.superseded:
            files[g].duplicates += 1
        for r in res.refusals:  # a held version refused when settled: never counted yet
            fs = files[r.group]
            fs.rejected += 1
            error = {"field": "_row", "code": E.DATABASE_REFUSED, "message": r.message}
            self.rejects.write(fs.source, self._places.row_of(r.seq), r.values, [error])
            by_code = fs.rejected_by_code
            by_code[E.DATABASE_REFUSED] = by_code.get(E.DATABASE_REFUSED, 0) + 1

    def _place(self, pipe: Pipeline, seq0: int, rb: RawBatch, res: BatchResult | None) -> None:
        """Remember where a batch that may hold versions began (its rows are not kept)."""
        if pipe.duplicates and res is not None:
            self._places.add(seq0, rb)

    # -- outputs and messages --------------------------------------------------------------------

    def _commit_outputs(self) -> None:
        """Every output into place, or (a stop at once waits: `held`) none of them."""
        with held():
            for w in self.finished:
                w.commit()
            for w in self.writers:
                if w not in self.finished:  # a run stopped early: what was written of it
                    w.finish()
                    w.commit()
            self.outputs_committed = True

    def _abort_outputs(self) -> None:
        uninterrupted(self._remove_outputs)  # (a Ctrl-C burst must not leave .partial files)

    def _remove_outputs(self) -> None:
        for w in self.writers:
            w.abort()
        for fs in self.summary.files:
            fs.output = None

    def _stopped(self, why: str) -> RunSummary:
        """The summary of a run a fault stopped: what it counted, and why it stopped (what
        a rolled-back transaction counted as stored is not)."""
        self.summary.stopped = why
        if self.opts.atomic and self.store is not None:
            for fs in self.summary.files:
                fs.inserted = fs.updated = fs.unchanged = 0
        return self.summary

    def _committed_note(self, per_file: bool = False) -> str:
        if self.store is None:
            if not self.outputs:
                return ""
            if self.outputs_committed:  # the stop came as they were moved into place
                return "; every output file was written whole and is in place"
            if any(w.streamed for w in self.writers):  # what went to stdout or a FIFO went
                return "; what was written to stdout or a FIFO stays written"
            return "; no output file was left under its real name"
        if self.opts.atomic or self.opts.dry_run:
            return " (nothing was committed: the run was one transaction)"
        done = sum(f.written for f in self.summary.files)
        note = f" ({done:,} rows were committed before it, in whole batches"
        if per_file and self.summary.files:
            note += ": " + ", ".join(
                f"{Path(f.source).name} {f.written:,}" for f in self.summary.files
            )
        return note + ")"


@contextmanager
def _run_transaction(store: BatchStore | None, opts: EnrichOptions) -> Iterator[None]:
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


__all__ = ["EnrichOptions", "FileSummary", "RunSummary", "positions", "run_enrich"]
