"""The ``embedline`` console script: a plain ``embedline search ...`` runs without building the
Typer app (:func:`embedline.flows.lean.fast_search`); every other command line, and any search
command line that is not one of the plain forms (``--help``, errors), goes to
:func:`embedline.flows.cli.main`. Imports neither Typer nor the command modules itself."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Console-script entry point."""
    # pydantic scans every installed distribution's entry points for its plugins on first use
    # (0.1-0.2 s of each command's start); embedline uses none. PYDANTIC_DISABLE_PLUGINS="" (empty)
    # in the environment turns the scan back on.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if sys.argv[1:2] == ["search"]:
        from embedline.flows.lean import fast_search

        code = fast_search(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    from embedline.flows.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
