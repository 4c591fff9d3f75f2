"""The options of `python -m dsocr convert`, apart from the command itself: building the parser imports the
standard library only (`python -m dsocr profile` runs before any virtual environment exists)."""

from __future__ import annotations

import argparse
import os

DEFAULT_CONCURRENCY = 8
SERVER_ENV = "DEEPSEEK_OCR_SERVER"
API_KEY_ENV = "DEEPSEEK_OCR_API_KEY"


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="files or folders (walked recursively; images and PDFs are recognised by their "
                             "content, other files are ignored), or - to read a list of paths from stdin")
    parser.add_argument("--out", "-o", required=True, metavar="DIR",
                        help="where the outputs go, mirroring the inputs' folders: DIR/a/b/report.md for "
                             "PATH/a/b/report.pdf")
    where = parser.add_argument_group("where the documents are read")
    where.add_argument("--server", default=os.environ.get(SERVER_ENV) or None, metavar="URL",
                       help=f"the service's URL (default: ${SERVER_ENV}); without one, the service runs inside "
                            "this process with the DEEPSEEK_OCR_* settings")
    where.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None, metavar="KEY",
                       help=f"the server's API key (default: ${API_KEY_ENV})")
    where.add_argument("--model", metavar="PATH",
                       help="without --server: the checkpoint to load (sets DEEPSEEK_OCR_MODEL_PATH; 'demo' for "
                            "the tiny demo checkpoint)")
    where.add_argument("--concurrency", type=positive, default=DEFAULT_CONCURRENCY, metavar="N",
                       help=f"documents in flight at once, one job each (default: {DEFAULT_CONCURRENCY}; the "
                            "server's queue holds what does not run yet)")
    reading = parser.add_argument_group("how they are read (the API's fields)")
    reading.add_argument("--mode", help="the resolution mode (see GET /api/modes); default: the server's")
    reading.add_argument("--prompt", help="the prompt; default: the server's")
    reading.add_argument("--pages", metavar="SELECTION", help="PDF pages to read, like 1-3,7 (for every PDF)")
    written = parser.add_argument_group("what is written")
    written.add_argument("--json", action="store_true", help="also DIR/.../NAME.json, the document's full answer")
    written.add_argument("--figures", action="store_true",
                         help="also the figure crops, in NAME_figures/ beside the markdown, which links to them")
    written.add_argument("--force", action="store_true",
                         help="convert every document again, even those whose output is up to date")
