"""The ``embedline`` console script: a plain ``embedline search ...`` runs without building the
Typer app (:func:`embedline.flows.lean.fast_search`); every other command line, and any search
command line that is not one of the plain forms (``--help``, errors), goes to
:func:`embedline.flows.cli.main`. Imports neither Typer nor the command modules itself."""

from __future__ import annotations

import os
import sys


def finish() -> None:
    """What a finished command does just before the interpreter shuts down: close the vector-store
    handles it opened (Edge shards flushed, qdrant-client local storage closed while the
    interpreter still works), then freeze the heap (``gc.freeze``) so the shutdown's garbage
    collections skip the objects every import left behind. A process that imported qdrant-client
    spent ~0.5 s exiting, mostly collecting its pydantic models; frozen: ~0.06 s. Files, locks and
    handles are released exactly as before (reference counting still frees them)."""
    import contextlib
    import gc

    if "embedline.tasks.vectorsets.stores" in sys.modules:
        from embedline.tasks.vectorsets.stores import close_stores

        with contextlib.suppress(Exception):  # never turn a finished command into a failure at exit
            close_stores()
    gc.freeze()


def main() -> None:
    """Console-script entry point."""
    # pydantic scans every installed distribution's entry points for its plugins on first use
    # (0.1-0.2 s of each command's start); embedline uses none. PYDANTIC_DISABLE_PLUGINS="" (empty)
    # in the environment turns the scan back on.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        if sys.argv[1:2] == ["search"]:
            from embedline.flows.lean import fast_search

            code = fast_search(sys.argv[2:])
            if code is not None:
                sys.exit(code)
        from embedline.flows.cli import main as cli_main

        cli_main()
    finally:
        finish()


if __name__ == "__main__":
    main()
