"""The JSON report: flat figures, ratios and pass/fail targets, plus `machine` and `config`.

Figures not measured are absent, never made up: the smoke test checks that every key is
there with a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# The headline figures (README.md explains each).
FIGURES = (
    "unary_hot_obol_ops",
    "unary_hot_pg_ops",
    "unary_spread_obol_ops",
    "unary_spread_pg_ops",
    "batch_obol_ops",
    "raw_redis_ops",
    "authorize_script_redis_us",
    "authorize_script_commands_redis_us",
    "authorize_p50_ms",
    "authorize_p95_ms",
    "authorize_p99_ms",
    "authorize_everysec_p50_ms",
    "authorize_everysec_p99_ms",
    "floor_p50_ms",
    "floor_p99_ms",
    "writebehind_lag_p99_ms",
    "writebehind_lost",
    "writebehind_duplicated",
    "hot_speedup",
    "spread_speedup",
    "batch_vs_raw",
)

TARGETS = (
    "target_hot_speedup_pass",
    "target_batch_ops_pass",
    "target_batch_vs_raw_pass",
    "target_authorize_p99_pass",
    "target_writebehind_lag_pass",
    "target_writebehind_integrity_pass",
    "all_targets_pass",
)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def add_ratios_and_targets(figures: dict[str, Any]) -> None:
    """Ratios and the DESIGN targets, computed from the figures already in `figures`."""
    f = figures
    f["hot_speedup"] = _ratio(f["unary_hot_obol_ops"], f["unary_hot_pg_ops"])
    f["spread_speedup"] = _ratio(f["unary_spread_obol_ops"], f["unary_spread_pg_ops"])
    f["batch_vs_raw"] = _ratio(f["batch_obol_ops"], f["raw_redis_ops"])
    f["target_hot_speedup_pass"] = f["unary_hot_obol_ops"] >= 3 * f["unary_hot_pg_ops"] > 0
    f["target_batch_ops_pass"] = f["batch_obol_ops"] >= 20_000
    f["target_batch_vs_raw_pass"] = f["batch_obol_ops"] >= 0.4 * f["raw_redis_ops"] > 0
    f["target_authorize_p99_pass"] = (
        f["authorize_p99_ms"] <= 5.0 and f["authorize_errors"] == 0 and f["authorize_count"] > 0
    )
    f["target_writebehind_lag_pass"] = f["writebehind_lag_p99_ms"] < 1000.0
    f["target_writebehind_integrity_pass"] = (
        f["writebehind_lost"] == 0
        and f["writebehind_duplicated"] == 0
        and f["writebehind_lost_requests"] == 0
        and f["writebehind_drained"]
    )
    f["all_targets_pass"] = all(f[key] for key in TARGETS[:-1])


def _clean(value: Any) -> Any:
    """JSON has no NaN: a ratio over zero becomes null (and fails the smoke test)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 3)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
    staging.replace(path)


def summary(report: dict[str, Any]) -> str:
    f = report
    mark = {True: "PASS", False: "FAIL"}
    lines = [
        "",
        f"  unary hot    obol {f['unary_hot_obol_ops']:>10,.0f} pairs/s   "
        f"pg {f['unary_hot_pg_ops']:>9,.0f} pairs/s   x{f['hot_speedup']:.1f}  "
        f"(target x3: {mark[f['target_hot_speedup_pass']]})",
        f"  unary spread obol {f['unary_spread_obol_ops']:>10,.0f} pairs/s   "
        f"pg {f['unary_spread_pg_ops']:>9,.0f} pairs/s   x{f['spread_speedup']:.1f}",
        f"  batch        obol {f['batch_obol_ops']:>10,.0f} auth/s    "
        f"raw redis {f['raw_redis_ops']:>9,.0f} auth/s   {f['batch_vs_raw']:.0%} of raw  "
        f"(>=20k: {mark[f['target_batch_ops_pass']]}, "
        f">=40%: {mark[f['target_batch_vs_raw_pass']]})",
        f"  authorize script: {f['authorize_script_redis_us']:.0f} us of Redis time per call, "
        f"{f['authorize_script_commands_redis_us']:.0f} us of it in Redis commands",
        f"  authorize @ {f['config']['latency_rate']}/s  p50 {f['authorize_p50_ms']:.2f} ms  "
        f"p95 {f['authorize_p95_ms']:.2f} ms  p99 {f['authorize_p99_ms']:.2f} ms  "
        f"errors {f['authorize_errors']}  (p99<=5ms: {mark[f['target_authorize_p99_pass']]})",
        f"  authorize @ {f['config']['latency_rate']}/s with appendfsync everysec  "
        f"p50 {f['authorize_everysec_p50_ms']:.2f} ms  p99 {f['authorize_everysec_p99_ms']:.2f} ms"
        f"  (disk fsync p50 {f['machine']['disk_fsync_p50_ms']:.2f} ms, "
        f"p99 {f['machine']['disk_fsync_p99_ms']:.2f} ms)",
        f"  health Check @ {f['config']['latency_rate']}/s (the transport floor)  "
        f"p50 {f['floor_p50_ms']:.2f} ms  p99 {f['floor_p99_ms']:.2f} ms",
        f"  write-behind lag p99 {f['writebehind_lag_p99_ms']:.0f} ms  "
        f"(<1s: {mark[f['target_writebehind_lag_pass']]})  lost {f['writebehind_lost']}  "
        f"duplicated {f['writebehind_duplicated']}  of {f['writebehind_entries_redis']} entries  "
        f"({mark[f['target_writebehind_integrity_pass']]})",
        "",
    ]
    return "\n".join(lines)
