"""A stand-in for an Obol service, for testing `obol run` before/without the real ones.

gRPC services serve grpc.health.v1 with "readiness" SERVING; the portal serves GET /healthz.
Each writes its environment to $FAKE_STATE_DIR/<name>.env.json. Controls:
FAKE_GRANDCHILD=1: start a `sleep` grandchild (pid in <name>.grandchild), to check that
nothing outlives a stop; FAKE_FAIL=<name>: that service exits with code 3 during start-up;
FAKE_UNREADY=<name>: it serves but never reports readiness; creating <name>.die in the
state directory makes it exit with code 4.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc


def main(name: str, port_env: str | None = None) -> None:
    state = Path(os.environ["FAKE_STATE_DIR"])
    (state / f"{name}.env.json").write_text(json.dumps(dict(os.environ)))
    if os.environ.get("FAKE_FAIL") == name:
        print(f"{name}: boom, cannot start", flush=True)
        sys.exit(3)
    if os.environ.get("FAKE_GRANDCHILD"):
        sleeper = subprocess.Popen(["sleep", "1000"])
        (state / f"{name}.grandchild").write_text(str(sleeper.pid))
    port = int(os.environ[port_env or f"OBOL_{name.upper()}_PORT"])
    ready = os.environ.get("FAKE_UNREADY") != name
    stop = _serve_http(port, ready) if name == "portal" else _serve_grpc(port, ready)
    print(f"fake {name} listening on 127.0.0.1:{port}", flush=True)

    # SIGTERM can come several times: when `obol` is SIGKILLed, the kernel sends the
    # parent-death signal as each of its threads dies (this process is handed from one dying
    # thread to the next), spread out under CPU load. So the handler only appends to a list,
    # which cannot block; stopping inside it deadlocked when it re-entered itself.
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: terminated.append(signum))
    while not terminated:
        if (state / f"{name}.die").exists():
            print(f"fake {name} dying", flush=True)
            os._exit(4)
        time.sleep(0.1)
    with contextlib.suppress(BrokenPipeError):  # `obol` may be gone (killed)
        print(f"fake {name} got SIGTERM", flush=True)
    stop()
    sys.exit(0)


def _serve_grpc(port: int, ready: bool) -> Callable[[], None]:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    status = "SERVING" if ready else "NOT_SERVING"
    servicer.set("readiness", health_pb2.HealthCheckResponse.ServingStatus.Value(status))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([_AcceptAnything()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()

    def stop() -> None:
        server.stop(0).wait()

    return stop


class _AcceptAnything(grpc.GenericRpcHandler):
    """Answers every other unary call with an empty message (what `obol run`'s demo-data
    loader sends); the real services are tested against it in tests/e2e."""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"")


def _serve_http(port: int, ready: bool) -> Callable[[], None]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if ready and self.path == "/healthz" else 503)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.shutdown
