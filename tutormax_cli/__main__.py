"""The `tutormax` command (and `python -m tutormax_cli`).

Ctrl-C and SIGTERM are handled from the first moment (tutormax_cli.interrupts): the command
line's imports take a while, and a signal in them got Python's defaults — a traceback
for Ctrl-C, an unannounced death for SIGTERM."""

from __future__ import annotations

import os
from typing import NoReturn


def main() -> NoReturn:
    import tutormax_cli.interrupts as interrupts

    interrupts.install()
    try:
        from tutormax_cli.cli import main as run_command_line

        run_command_line()  # leaves by os._exit, a stop at once included
    except KeyboardInterrupt:  # in the imports, or on the way into the command line
        interrupts.say_stopped()
        os._exit(interrupts.exit_code())


if __name__ == "__main__":
    main()
