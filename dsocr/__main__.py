"""`python -m dsocr <command>`: the service's commands beside the HTTP server.

Each command is a function taking the parsed arguments and returning the exit status, registered in
`build_parser` with its own options. A command imports what it needs inside its function: `profile` runs with
the system's python3 before any virtual environment exists, so this module itself imports the standard
library only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def profile(args: argparse.Namespace) -> int:
    """Prints the install profile (native, remote-code or vllm) that DEEPSEEK_OCR_ENGINE and
    DEEPSEEK_OCR_MODEL_PATH call for."""
    from dsocr.profiles import profile_for

    print(profile_for(os.environ).value)
    return 0


def convert(args: argparse.Namespace) -> int:
    """Converts images and PDFs (files, folders walked recursively, or - for a list on stdin) to markdown, one job
    each, against a server (--server) or the service run inside this process; a second run converts only what
    the first did not. Exits 1 when any document failed."""
    from dsocr.cli.convert import run

    return run(args)


def worker(args: argparse.Namespace) -> int:
    """Works on jobs without serving HTTP: claims queued pages from the database (DEEPSEEK_OCR_DATABASE_URL) and
    reads them with the configured model or vLLM servers; the same settings as the service. SIGTERM stops it
    cleanly: what it holds goes back to the queue."""
    from dsocr.jobs.standalone import main as work

    return work()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dsocr", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("profile", help="which install profile the configured checkpoint needs",
                                  description=profile.__doc__)
    command.set_defaults(run=profile)

    from dsocr.cli.options import add_convert_arguments  # the standard library only, as this module

    command = commands.add_parser("convert", help="convert images and PDFs to markdown", description=convert.__doc__)
    add_convert_arguments(command)
    command.set_defaults(run=convert)

    command = commands.add_parser("worker", help="work on jobs without serving HTTP", description=worker.__doc__)
    command.set_defaults(run=worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
