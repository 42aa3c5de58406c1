"""`edgekit serve`: a package behind HTTP (Starlette on uvicorn) with Prometheus metrics and drift monitoring."""

from __future__ import annotations

import dataclasses
import importlib.util
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import MissingBackend, UserError
from edgekit.runtime.monitor import MonitorConfig

SERVER_MODULES = (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"))
MAX_BODY_BYTES = 16 * 2**20

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from edgekit.runtime.session import Session


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None, workers: int = 1,
          max_body_bytes: int = MAX_BODY_BYTES, monitor: MonitorConfig | None = None,
          on_ready: Callable[[str], None] = lambda url: None, access_log: bool = False) -> None:
    """Serve the package at `path` until interrupted (see build_app); `on_ready` gets the URL once the socket listens
    (port 0: a free one)."""
    app = build_app(path, threads, workers, max_body_bytes, monitor)
    import uvicorn

    listener = listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=access_log, lifespan="off"))
    on_ready(url(listener))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised the signal it caught
        pass
    finally:
        listener.close()


def build_app(path: str | Path, threads: int | None = None, workers: int = 1, max_body_bytes: int = MAX_BODY_BYTES,
              monitor: MonitorConfig | None = None) -> Starlette:
    """The ASGI app over the package at `path`, opened with a monitor once it has passed its self-test here (where it
    has one; the self-test's runs are not counted)."""
    for module, package in SERVER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingBackend(package, "serve", "edgekit serve")
    from edgekit.runtime import load
    from edgekit.runtime.monitor import Monitor
    from edgekit.serving.app import create_app

    session = load(path, threads)
    health = health_report(session)
    session.monitor = Monitor(session.inputs, session.package.manifest.data, monitor)
    return create_app(session, health, workers, max_body_bytes)


def health_report(session: Session) -> dict[str, Any]:
    """What /healthz reports: the package, its runtime, and its self-test run here (refusing a package that fails it)."""
    from edgekit.runtime.versions import installed_version

    package = session.package
    manifest = package.manifest
    try:
        result = session.self_test()
    except UserError as missing:  # a package without self-test samples is served, and says so
        self_test: dict[str, Any] = {"ok": None, "note": str(missing)}
    else:
        if not result.ok:
            raise UserError(f"package {package.name} fails its self-test here ({result.worst_output}: {result.worst}; "
                            f"{result.criterion}): not serving it")
        self_test = dataclasses.asdict(result)
    return {"package": str(package.name), "target": manifest.target.name, "runtime": manifest.runtime,
            "runtime_version": installed_version(manifest.runtime), "precision": manifest.precision,
            "inputs": [spec.to_dict() for spec in session.inputs], "outputs": [spec.to_dict() for spec in session.outputs],
            "self_test": self_test}


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, as the host resolves). Made with proto IPPROTO_TCP, which is
    what asyncio checks before it turns Nagle's algorithm off on accepted connections: without it every response
    written in two parts waits ~40 ms for the client's delayed ACK."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(2048)
        except OSError:
            listener.close()
            raise
        return listener
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
