"""`buf breaking` of the working tree's protos against another git ref (default: main).

Buf cannot read our protos straight from git because protovalidate's validate.proto has
no source here (see gen_protos.py), so both sides are compiled into images first.
Set BUF_BREAKING_AGAINST to compare against another ref (e.g. origin/main).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from gen_protos import BUILD, PROTO_ROOT, ROOT, build_image

BUF = ROOT / "node_modules" / ".bin" / "buf"


def _export_protos(ref: str, into: Path) -> bool:
    """Write protos/ as of `ref` into `into`; False when the ref has no protos."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "protos"],
        cwd=ROOT,
        capture_output=True,
    )
    if archive.returncode != 0:
        return False
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return any((into / "protos").rglob("*.proto"))


def main() -> int:
    ref = os.environ.get("BUF_BREAKING_AGAINST", "main")
    current = BUILD / "obol.binpb"
    build_image(PROTO_ROOT, current)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if not _export_protos(ref, base):
            print(f"buf breaking: {ref} has no protos yet, nothing to compare")
            return 0
        against = base / "against.binpb"
        build_image(base / "protos", against)
        result = subprocess.run(
            [str(BUF), "breaking", str(current), "--against", str(against)], cwd=ROOT
        )
    if result.returncode == 0:
        print(f"buf breaking: no breaking changes against {ref}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
