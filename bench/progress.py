"""Progress lines on stdout, stamped with the time since the run began."""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()


def say(message: str) -> None:
    print(
        f"obol bench [{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stdout, flush=True
    )
