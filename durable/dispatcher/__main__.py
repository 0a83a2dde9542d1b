"""``durable-dispatcher`` / ``python -m dispatcher``: see ``--help``."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Sequence

from durable.errors import ConfigurationError

from .app import EXIT_BAD_SETTINGS, Dispatcher, StartupError, import_workflow_modules
from .logs import setup_logging
from .settings import load_settings
from .shutdown import catch_early_signals


def run(argv: Sequence[str] | None = None) -> int:
    """Parse settings, import workflow modules, serve until a signal; returns the exit status."""
    catch_early_signals()
    try:
        settings = load_settings(argv)
    except ConfigurationError as exc:
        print(f"durable-dispatcher: error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    setup_logging(settings.log_level, settings.log_format)
    try:
        import_workflow_modules(settings.modules)
    except StartupError as exc:
        logging.getLogger("dispatcher").error("%s", exc)
        return exc.code
    return asyncio.run(Dispatcher(settings).serve())


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
