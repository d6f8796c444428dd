"""The `tutormax` command (and `python -m tutormax_cli`).

Ctrl-C and SIGTERM are handled from the first moment (tutormax_cli.interrupts): the command
line's imports take a while, and a signal in them got Python's defaults — a traceback
for Ctrl-C, an unannounced death for SIGTERM."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def main() -> NoReturn:
    import tutormax_cli.interrupts as interrupts

    interrupts.install()
    if sys.platform.startswith("linux"):  # Arrow's wheels there ship jemalloc
        # NOTE: set before Arrow is imported: a pool chosen later (cli._tune_arrow) came
        # after the first allocations had started mimalloc, which kept ~35 MB resident
        # for the whole run (1M sessions: 209 MB peak; jemalloc from the start: 172 MB).
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    try:
        from tutormax_cli.cli import main as run_command_line

        run_command_line()  # leaves by os._exit, a stop at once included
    except KeyboardInterrupt:  # in the imports, or on the way into the command line
        interrupts.say_stopped()
        os._exit(interrupts.exit_code())


if __name__ == "__main__":
    main()
