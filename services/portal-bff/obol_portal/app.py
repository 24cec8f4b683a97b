"""The portal-bff HTTP application: customer portal, embeddable component, operator dashboard.

For now it serves the health endpoints and a placeholder page; the portal issue fills it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

DependencyCheck = Callable[[], Awaitable[None]]
Dependencies = Sequence[tuple[str, DependencyCheck]]
# Opened inside the server's event loop (gRPC aio channels belong to the loop that made them).
DependencyFactory = Callable[[], AbstractAsyncContextManager[Dependencies]]

_PLACEHOLDER_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Obol billing portal</title></head>
<body>
<main>
<h1>Obol billing portal</h1>
<p>The customer portal (balance, usage, transactions, top-up) arrives with the portal issue.</p>
</main>
</body>
</html>
"""


def create_app(open_dependencies: DependencyFactory) -> Starlette:
    """Build the app; /readyz runs the named dependency checks (each raises on failure)."""
    dependencies: list[tuple[str, DependencyCheck]] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with open_dependencies() as opened:
            dependencies.extend(opened)
            yield

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        failing: dict[str, str] = {}
        for name, check in dependencies:
            try:
                await check()
            except Exception as exc:  # a failed dependency is reported, never raised
                failing[name] = str(exc) or type(exc).__name__
        if failing:
            return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def index(_: Request) -> HTMLResponse:
        return HTMLResponse(_PLACEHOLDER_PAGE)

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/", index),
        ],
    )
