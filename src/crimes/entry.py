"""The `crimes` program's entry point: what holds for the whole process is decided here,
before the command's modules are imported."""

from __future__ import annotations

import os
import sys
from typing import Final

# Imported only to print for a person: structlog's pretty tracebacks and httpx's own
# command-line client would load rich (and click's and pygments' parts with it) into every
# process, about 0.2 s of a model service's 1.5 s start to SERVING. A service prints JSON
# lines only, so `crimes serve ...` goes without them: a None in sys.modules makes their
# import fail, and both libraries fall back as when rich is not installed; Typer is told by
# its own setting (its help and usage errors then print as Click's).
UNUSED_BY_SERVICES: Final = ("rich", "httpx._main")


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        os.environ["TYPER_USE_RICH"] = "0"
        for name in UNUSED_BY_SERVICES:
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from crimes.cli import app

    app()
