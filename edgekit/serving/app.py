"""The ASGI app (Starlette) over one monitored Session: POST /infer, GET /healthz, GET /metrics.

Decoding, inference and encoding run in worker threads (anyio's, at most `workers` at once), never on the event loop.
A bad request gets a 4xx and one line of JSON {"error": ...}; a failure inside the runtime a 500 with its gist (the
traceback goes to the log); either way the server keeps serving.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgekit.errors import UserError, gist
from edgekit.runtime.session import Session
from edgekit.serving.bodies import BadRequest, decode_feeds, encode_outputs, error_body
from edgekit.serving.metrics import ServerMetrics

log = logging.getLogger("edgekit.serving")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def create_app(session: Session, health: dict[str, Any], workers: int, max_body_bytes: int) -> Starlette:
    """The app serving `session` (monitored: its stats feed /metrics); `health` is what /healthz reports beside
    "status"."""
    metrics = ServerMetrics(session)
    limiter = anyio.CapacityLimiter(workers)

    def answer(body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        feeds = decode_feeds(body, content_type, session.inputs, max_body_bytes)
        return encode_outputs(session.run(feeds), accept)

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, max_body_bytes)
            content, media_type = await anyio.to_thread.run_sync(
                answer, body, request.headers.get("content-type", ""), request.headers.get("accept", ""), limiter=limiter)
            response = Response(content, media_type=media_type)
        except BadRequest as refused:
            response = _error(refused.status, refused.message)
        except UserError as error:  # Session.check: a missing input, a wrong dtype or shape
            response = _error(400, str(error))
        except ClientDisconnect:
            response = _error(400, "the client went away before sending the whole body")
        except Exception as error:  # the runtime failed on feeds that passed the checks: logged, and the server goes on
            log.exception("POST /infer: inference failed")
            response = _error(500, f"inference failed: {type(error).__name__}: {gist(error)}")
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.request_seconds.observe(time.perf_counter() - started)
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **health})

    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=PROMETHEUS_TEXT)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}")

    async def server_error(request: Request, error: Exception) -> Response:
        return _error(500, f"{type(error).__name__}: {gist(error)}")

    routes = [Route("/infer", infer, methods=["POST"]), Route("/healthz", healthz, methods=["GET"]),
              Route("/metrics", exposition, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as its declared or received size passes `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"body of {declared} bytes is over the {limit} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json")
