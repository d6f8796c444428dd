"""An enrich run's options, its outputs and rejects file (planned and checked before the
first batch), and the summary it returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import errors as E
from ..config import DEFAULT_BATCH_ROWS, DEFAULT_TIMEZONE
from ..schema import KIND_ORDER
from .formats import EXTENSIONS, check_format, detect_format, named_format
from .inputs import is_stdin, split_compression
from .read import Source
from .write import check_output, output_target


@dataclass(frozen=True)
class EnrichOptions:
    paths: list[Path]
    as_of: datetime
    timezone: str = DEFAULT_TIMEZONE
    out: Path | None = None
    kind: str | None = None
    format: str | None = None  # output format; also the input format of unknown extensions
    rejects: Path | None = None
    batch_size: int = DEFAULT_BATCH_ROWS
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
    duplicates: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    output: str | None = None
    rejected_by_code: dict[str, int] = field(default_factory=dict)  # a row counts once a code

    @property
    def rows_per_s(self) -> float:
        return round(self.read / self.seconds, 1) if self.seconds else 0.0

    @property
    def written(self) -> int:
        """Rows this file's run wrote to the database (inserted or updated)."""
        return self.inserted + self.updated


@dataclass
class RunSummary:
    files: list[FileSummary] = field(default_factory=list)
    rejects_file: str | None = None
    database: str | None = None  # masked URL, or None with --no-db
    dry_run: bool = False
    stopped: str | None = None  # why the run stopped early (--max-errors)
    as_of: str = ""
    timezone: str = DEFAULT_TIMEZONE

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def rejected_by_code(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for f in self.files:
            for code, n in f.rejected_by_code.items():
                total[code] = total.get(code, 0) + n
        return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def exit_code(self) -> int:
        """2 for a run stopped early (--max-errors: the rest not done), else 1 if rows were
        rejected, else 0."""
        if self.stopped:
            return E.EXIT_FATAL
        return E.EXIT_REJECTS if self.rejected else E.EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for f, fs in zip(d["files"], self.files, strict=True):
            f["rows_per_s"] = fs.rows_per_s
        d["rejected"] = self.rejected
        d["rejected_by_code"] = self.rejected_by_code
        d["exit_code"] = self.exit_code
        return d


# (source, kind, rows done in this file, fraction of the file read)
Progress = Callable[[str, str, int, float], None]


def plan_outputs(opts: EnrichOptions, sources: list[Source]) -> dict[Path, tuple[Path, str]]:
    """Where each input's enriched rows go (SPEC §4), checked before anything is written.

    One input: --out is the output (`-`: stdout), in the format its name's extension tells
    (under a compression suffix: `out.csv.gz`), else --format, else for stdout, a FIFO or a
    device the input's format. Several inputs: --out is a directory and each output is named
    after its input without a compression suffix (`sessions.csv.gz` → `sessions.csv`,
    stdin → `stdin.<ext>`), with --format's extension when given. What an output cannot
    be (Parquet on stdout, --atomic with a stream) is refused here (writers.check_output).
    """

    if opts.out is None:
        return {}
    if opts.format:
        check_format(opts.format)
    out = opts.out
    plan: dict[Path, tuple[Path, str]] = {}
    if is_stdin(out) or (len(sources) == 1 and not out.is_dir() and not str(out).endswith("/")):
        if len(sources) > 1:
            raise E.UsageError(
                "--out -: stdout takes one output; with several inputs --out names a directory"
            )
        fmt = named_format(out) or opts.format
        if fmt is None:
            fmt = sources[0].format if output_target(out).streamed else detect_format(out)
        plan[sources[0].path] = (out, fmt)
    else:
        if out.exists() and not out.is_dir():
            raise E.UsageError(f"--out {out}: with several inputs --out must name a directory")
        for s in sources:
            fmt = opts.format or s.format
            target = out / (s.name if not opts.format else s.stem + EXTENSIONS[fmt])
            if any(t == target for t, _ in plan.values()):
                raise E.UsageError(f"--out {out}: two inputs would both write {target.name}")
            plan[s.path] = (target, fmt)
        for src, (target, _) in plan.items():
            if not is_stdin(src) and target.resolve() == src.resolve():
                raise E.UsageError(f"--out {target}: would overwrite its own input")
    fds = set()
    for path, fmt in plan.values():
        where = output_target(path)
        check_output(where, fmt, atomic=opts.atomic)
        fds.add(where.fd)
    if opts.rejects is not None and (fd := output_target(opts.rejects).fd) in fds and fd:
        raise E.UsageError(f"--rejects {opts.rejects}: the output goes there; name a file")
    return plan


def check_written(
    opts: EnrichOptions, sources: list[Source], plan: dict[Path, tuple[Path, str]]
) -> None:
    """Each file the run replaces — every output, and the rejects file (--rejects, or where
    rejected rows go by default, whether or not any will be) — is a file of its own, and
    none is an input: a run never writes over what it reads, nor one of its results over
    another (the rejects would be lost under an output, or an input under its output).
    Files are told apart by device and inode where they exist (links, `./a` and `a`)."""

    def identity(path: Path) -> object:
        try:
            st = os.stat(path)
        except OSError:
            return os.path.realpath(path)
        return (st.st_dev, st.st_ino)

    inputs = {identity(s.path): s.path for s in sources if not is_stdin(s.path)}
    rejects = default_rejects_path(opts)
    named = "--rejects" if opts.rejects is not None else "the rejects file (default)"
    written = [*((t, f"--out {t}") for t, _ in plan.values()), (rejects, f"{named} {rejects}")]
    seen: dict[object, str] = {}
    for path, what in written:
        try:
            if output_target(path).mode != "replace":
                continue  # stdout, a FIFO, a device: check_output and plan_outputs see to them
        except E.TutormaxError:
            continue  # cannot be written: said when it is
        me = identity(path)
        if me in inputs:
            raise E.UsageError(f"{what}: would overwrite the input {inputs[me]}")
        if me in seen:
            hint = "; pass --rejects to put rejected rows elsewhere" if path == rejects else ""
            raise E.UsageError(f"{what}: {seen[me]} writes that file too{hint}")
        seen[me] = what


def default_rejects_path(opts: EnrichOptions) -> Path:
    """--rejects, else next to --out (`NAME.rejects.jsonl`; `rejects.jsonl` in an output
    directory), else — no --out, or an --out that is stdout, a FIFO or a device, which
    has no "next to" — ./tutormax.rejects.jsonl."""

    if opts.rejects is not None:
        return opts.rejects
    out = opts.out
    if out is None or is_stdin(out):
        return Path("tutormax.rejects.jsonl")
    if out.is_dir() or len(opts.paths) > 1 or str(out).endswith("/"):
        return out / "rejects.jsonl"
    try:
        streamed = output_target(out).streamed
    except E.TutormaxError:
        streamed = False
    if streamed:
        return Path("tutormax.rejects.jsonl")
    return out.with_name(Path(split_compression(out.name)[0]).stem + ".rejects.jsonl")


def open_sources(opts: EnrichOptions, stop: Callable[[], bool] | None = None) -> list[Source]:

    if opts.batch_size < 1:
        raise E.UsageError(f"--batch-size {opts.batch_size}: must be at least 1")
    if opts.max_errors is not None and opts.max_errors < 0:
        raise E.UsageError(f"--max-errors {opts.max_errors}: must be 0 or more")
    if sum(1 for p in opts.paths if is_stdin(p)) > 1:
        raise E.UsageError("-: stdin is named more than once; it can be read once")
    sources = [Source(p, opts.format, opts.kind, stop) for p in opts.paths]
    # Parents before children, so keys and the feedback join resolve within the run.
    return sorted(sources, key=lambda s: KIND_ORDER.index(s.kind.name))
