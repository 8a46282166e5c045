"""`embedline serve`: a local Prefect server + UI for embedline (deployments: flows/deploy.py).

- `serve` runs `prefect server start` on 127.0.0.1 with SQLite under the project's `.prefect/`
  (PREFECT_HOME), analytics off, and the API, UI and port settings agreeing with each other (a bare
  `prefect server start --port P` leaves the UI calling port 4200). It runs in the background in its
  own process group, with `server.pid` and `server.log` in `.prefect/`; `--stop` ends that group.
- `serve --worker POOL` (what `make worker` runs) starts `prefect worker start --pool POOL` the same
  way (`worker.pid`, `worker.log`), pointed at that server; `--stop` ends the worker first (SIGTERM,
  then SIGKILL: a worker that lost its server loops on connection errors and ignores SIGTERM).

Nothing here is needed to run the pipeline: `embedline ingest` and `dvc repro` work without a server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from embedline.flows.console import err, out

DEFAULT_PORT = 4200
HOST = "127.0.0.1"
STATE_FILE = "embedline-server.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
WORKER_PID_FILE = "worker.pid"
WORKER_LOG_FILE = "worker.log"


class ServeError(RuntimeError):
    """The server could not be started, found or stopped."""


# ---- locations ---------------------------------------------------------------------------------
def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding prefect.yaml or params.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "prefect.yaml").exists() or (folder / "params.yaml").exists():
            return folder
    return here


def default_home(root: Path) -> Path:
    return root / ".prefect"


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int
    home: Path

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"


def server_env(info: ServerInfo, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `prefect server start`: every port/URL setting agrees with `info`."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "PREFECT_HOME": str(info.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{info.home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": info.host,
            "PREFECT_SERVER_API_PORT": str(info.port),
            "PREFECT_UI_API_URL": info.api_url,
            "PREFECT_UI_URL": info.ui_url,
            "PREFECT_API_URL": info.api_url,
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        }
    )
    return env


def server_command(info: ServerInfo) -> list[str]:
    return [
        sys.executable, "-m", "prefect", "server", "start",
        "--host", info.host, "--port", str(info.port), "--analytics-off", "--scheduler",
    ]


# ---- process control ---------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def read_state(home: Path) -> dict[str, Any] | None:
    """The running server recorded in `home`, or None (stale records are removed)."""
    state_path = home / STATE_FILE
    if not state_path.exists():
        return None
    state: dict[str, Any] = json.loads(state_path.read_text())
    if not _alive(int(state["pid"])):
        state_path.unlink(missing_ok=True)
        (home / PID_FILE).unlink(missing_ok=True)
        return None
    return state


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes] | None, log: Path | None,
                 timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url):
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise ServeError(f"prefect server exited with code {proc.returncode}:\n{tail}")
        time.sleep(0.5)
    raise ServeError(f"prefect server did not answer {api_url}/health within {timeout:.0f} s"
                     + (f" (log: {log})" if log else ""))


def start_server(info: ServerInfo, timeout: float = 120.0,
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start a background server (own process group) and wait for /api/health; idempotent.

    `extra_env` adds server settings (e.g. PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS).
    """
    info.home.mkdir(parents=True, exist_ok=True)
    running = read_state(info.home)
    if running:
        if int(running["port"]) != info.port:
            raise ServeError(
                f"a server from {info.home} already runs on port {running['port']}: "
                "stop it first (embedline serve --stop)"
            )
        wait_healthy(str(running["api_url"]), None, None, timeout)
        return running
    if not port_free(info.host, info.port):
        raise ServeError(f"port {info.port} on {info.host} is in use; pick another with --port")
    log = info.home / LOG_FILE
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            server_command(info), env={**server_env(info), **(extra_env or {})}, stdin=subprocess.DEVNULL,
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=info.home,
        )
    state = {"pid": proc.pid, "host": info.host, "port": info.port, "api_url": info.api_url,
             "ui_url": info.ui_url, "log": str(log), "home": str(info.home)}
    (info.home / PID_FILE).write_text(f"{proc.pid}\n")
    (info.home / STATE_FILE).write_text(json.dumps(state, indent=2))
    try:
        wait_healthy(info.api_url, proc, log, timeout)
    except BaseException:
        stop_server(info.home)
        raise
    return state


def stop_server(home: Path, timeout: float = 20.0) -> bool:
    """Stop the worker and the server recorded in `home` (SIGTERM to each process group, then
    SIGKILL); True if a server was running."""
    stop_worker(home)
    stopped = _stop_group(home / PID_FILE, timeout)
    (home / STATE_FILE).unlink(missing_ok=True)
    return stopped


def stop_worker(home: Path, timeout: float = 10.0) -> bool:
    """Stop the worker `serve --worker` started from `home`; True if one was running."""
    return _stop_group(home / WORKER_PID_FILE, timeout)


def _stop_group(pid_path: Path, timeout: float) -> bool:
    """End the process group led by the pid in `pid_path` (SIGTERM, then SIGKILL); remove the file."""
    if not pid_path.exists():
        return False
    pid = int(pid_path.read_text().strip())
    stopped = False
    if _alive(pid):
        stopped = True
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _alive(pid):
                _reap(pid)
                time.sleep(0.2)
            if not _alive(pid):
                break
    pid_path.unlink(missing_ok=True)
    return stopped


def start_worker(home: Path, pool: str, api_url: str) -> int:
    """Start `prefect worker start --pool POOL` in the background (own process group, pid and log
    in `home`) against `api_url`; idempotent. Returns its pid."""
    home.mkdir(parents=True, exist_ok=True)
    pid_path = home / WORKER_PID_FILE
    if pid_path.exists():
        pid = int(pid_path.read_text().strip())
        if _alive(pid):
            return pid
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with (home / WORKER_LOG_FILE).open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool], env=env,
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    pid_path.write_text(f"{proc.pid}\n")
    return proc.pid


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def api_url_for(home: Path) -> str:
    """PREFECT_API_URL if set, else the server `embedline serve` recorded in `home`."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    state = read_state(home)
    if not state:
        raise ServeError("no Prefect server: start one with `make serve` (or set PREFECT_API_URL)")
    return str(state["api_url"])


# ---- commands ----------------------------------------------------------------------------------
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="PREFECT_HOME for the server (default: <project>/.prefect)."),
]


def serve(
    port: Annotated[int, typer.Option(help="API + UI port.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = HOST,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the background server.")] = False,
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal.")] = False,
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /api/health.")] = 120.0,
    worker: Annotated[
        str | None, typer.Option("--worker", help="Start a background worker for this work pool.")
    ] = None,
) -> None:
    """Start a local Prefect server + UI (SQLite in .prefect/, analytics off), or --stop it."""
    info = ServerInfo(host, port, (home or default_home(project_root())).resolve())
    if stop:
        had_worker = stop_worker(info.home)
        stopped = stop_server(info.home)
        out.print("stopped" if stopped or had_worker else f"no server running from {info.home}")
        return
    if worker:
        try:
            pid = start_worker(info.home, worker, api_url_for(info.home))
        except ServeError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        out.print(f"worker for pool {worker!r}: pid {pid}, log {info.home / WORKER_LOG_FILE}", soft_wrap=True)
        return
    if foreground:
        info.home.mkdir(parents=True, exist_ok=True)
        _banner(info)
        os.execve(sys.executable, server_command(info), server_env(info))
    already = read_state(info.home) is not None
    try:
        state = start_server(info, timeout)
    except ServeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if already:
        out.print("(already running)")
    _banner(info, pid=int(state["pid"]))


def _banner(info: ServerInfo, pid: int | None = None) -> None:
    out.print(f"Prefect UI:  {info.ui_url}", soft_wrap=True)
    out.print(f"Prefect API: {info.api_url}" + (f"  (pid {pid}, log {info.home / LOG_FILE})" if pid else ""),
              soft_wrap=True)
    out.print("Point flows, workers and the CLI at it with:")
    out.print(f"  export PREFECT_API_URL={info.api_url}", highlight=False, soft_wrap=True)
