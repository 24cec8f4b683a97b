"""obol_core: what every Obol service shares.

settings      typed environment settings (`CommonSettings`), failing fast by variable name
apikeys       API keys (generation, SHA-256 at rest), scopes and per-method scope policy
errors        `ObolError` hierarchy and its mapping to `google.rpc.Status`
validation    protovalidate at the edge, with field paths such as `items[3].amount`
interceptors  grpc.aio edge (validation, errors, canonical log line, metrics) and auth
grpc_server   `build_server` / `serve`: health, readiness, reflection, graceful shutdown
grpc_client   `create_channel`: API key, default deadline, trace propagation
telemetry     OpenTelemetry traces and metrics (OTLP), asyncpg and redis instrumentation
logging       structlog JSON lines with trace and span ids
money         integer money: one rounding function, decimal strings, range checks
postgres      pools, forward-only migrations, readiness
redis         clients (single node or Cluster), NOSCRIPT-safe Lua scripts, readiness
"""
