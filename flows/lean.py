"""What a command needs without Typer: the consoles, config loading, the error report, and
``embedline search`` itself.

Typer builds a pydantic ``TypeAdapter`` for every parameter of the command it runs (typer 0.29:
~0.3-0.5 CPU s of a cold ``embedline search``, more than the query's embedding). A plain
``embedline search QUERY [-k N] [--set K=V] [--params P] [--json] [--hybrid] [--chunks]`` is
therefore parsed here (:func:`parse_search`) and run before the Typer app is built
(:func:`fast_search`, called by the console script :func:`embedline.flows.entry.main`); anything else (``--help``, an
unknown option, a value that does not parse) goes through Typer, so help and usage errors are
Typer's own. Both paths run :func:`run_search` and report errors with :func:`report_error`: same
output, same exit codes.

This module imports rich's console and nothing of Typer; :mod:`embedline.flows.console` re-exports
its names for the command modules.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:  # pydantic (config) loads only when a command runs: `embedline --help` stays fast
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import Config

# the default params file (= embedline.tasks.config.PARAMS_FILE; a test keeps them equal)
PARAMS_FILE = "params.yaml"

out = Console()
err = Console(stderr=True)


def load(params: Path, overrides: list[str] | None, source: str | None = None) -> tuple[Config, Artifacts]:
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import ConfigError, load_config

    if not params.exists() and params != Path(PARAMS_FILE):  # an explicit --params must exist
        raise ConfigError(f"--params {params}: no such file")
    items = list(overrides or [])
    if source is not None:
        items.append(f"source={json.dumps(source)}")
    cfg = load_config(params, items)
    return cfg, Artifacts(params.resolve().parent)


def report_error(exc: BaseException) -> int:
    """Print one clear line for a failed command and return its exit code: 130 interrupted, 2 a
    config error, 1 anything else (re-raised instead when ``EMBEDLINE_DEBUG`` is set)."""
    if isinstance(exc, KeyboardInterrupt):
        err.print("[yellow]interrupted[/yellow] (completed embedding batches are cached)")
        return 130
    from embedline.tasks.config import ConfigError

    if isinstance(exc, ConfigError):
        err.print(f"[red]config error:[/red] {exc}")
        return 2
    if os.environ.get("EMBEDLINE_DEBUG"):
        raise exc
    err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
    return 1


# ---- embedline search -----------------------------------------------------------------------------
def run_search(query: str, k: int = 5, set_: list[str] | None = None, params: Path = Path(PARAMS_FILE),
               as_json: bool = False, hybrid: bool = False, chunks: bool = False) -> None:
    """The body of ``embedline search`` (see :func:`embedline.flows.commands.search`)."""
    cfg, art = load(params, set_)
    mode = "hybrid" if hybrid else "dense"
    if not chunks:
        _print_documents(cfg, art, query, k, mode, as_json)
        return
    from embedline.tasks.vectorsets.search import search as do_search
    from embedline.tasks.vectorsets.search import served

    hits = do_search(cfg, art, query, k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        collection, fingerprint = served(cfg, art)  # what answered
        for h in hits:
            out.print_json(json.dumps({"score": h.score, "source": h.source, "text": h.text,
                                       "collection": collection, "fingerprint": fingerprint}))
        return
    out.print(f"[bold]top {len(hits)} for[/bold] {query!r}")
    for rank, h in enumerate(hits, start=1):
        out.print(f"{rank:>2}. [cyan]{h.score:.3f}[/cyan]  [bold]{h.source}[/bold]")
        out.print("    " + " ".join(h.text.split())[:200], highlight=False, soft_wrap=True)


def _print_documents(cfg: Any, art: Any, query: str, k: int, mode: str, as_json: bool) -> None:
    """Grouped output: one line per document with its best chunk (issue 15: search that answers)."""
    from embedline.tasks.vectorsets.search import search_documents

    res = search_documents(cfg, art, query, k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        for d in res.documents:
            row = {"collection": res.collection, "fingerprint": res.fingerprint, **d.as_dict()}
            out.print(json.dumps(row, ensure_ascii=False), markup=False, highlight=False, soft_wrap=True)
        return
    out.print(f"[bold]top {len(res.documents)} documents for[/bold] {query!r}")
    for rank, d in enumerate(res.documents, start=1):
        more = f"  ({d.chunks} chunks)" if d.chunks > 1 else ""
        out.print(f"{rank:>2}. [cyan]{d.score:.3f}[/cyan]  [bold]{d.doc}[/bold]{more}", highlight=False)
        if d.heading_path:
            out.print("    § " + " > ".join(d.heading_path), highlight=False, soft_wrap=True)
        out.print("    " + " ".join(d.snippet.split())[:200], highlight=False, soft_wrap=True)


_FLAGS = {"--json": "as_json", "--hybrid": "hybrid", "--chunks": "chunks"}
_VALUED = {"-k": "k", "--set": "set_", "-s": "set_", "--params": "params"}


def _option(args: dict[str, Any], name: str, value: str) -> bool:
    key = _VALUED[name]
    if key == "k":
        try:
            args["k"] = int(value)
        except ValueError:
            return False
    elif key == "set_":
        args.setdefault("set_", []).append(value)
    else:
        args["params"] = Path(value)
    return True


def parse_search(argv: list[str]) -> dict[str, Any] | None:
    """The arguments of ``embedline search`` as :func:`run_search` keywords, or None when ``argv``
    is anything but the plain forms (then Typer parses it: help, errors and rare forms stay its own)."""
    args: dict[str, Any] = {}
    query: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, inline = a.partition("=")
        if a in _FLAGS:
            args[_FLAGS[a]] = True
        elif name in _VALUED and (eq or i + 1 < len(argv)):
            if not eq:
                i += 1
                inline = argv[i]
            elif not name.startswith("--"):  # click reads "-k=5" as the value "=5"
                return None
            if not _option(args, name, inline):
                return None
        elif a.startswith("-") or query:  # --help, an unknown option, "--", a second argument
            return None
        else:
            query.append(a)
        i += 1
    if not query:
        return None
    return {"query": query[0], **args}


def fast_search(argv: list[str]) -> int | None:
    """Run ``embedline search`` from ``argv`` (the words after ``search``) without Typer; its exit
    code, or None when Typer must parse ``argv`` (see :func:`parse_search`)."""
    args = parse_search(argv)
    if args is None:
        return None
    try:
        run_search(**args)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 reported exactly as Typer's path does (guard)
        return report_error(exc)
    finally:
        sys.stdout.flush()
    return 0
