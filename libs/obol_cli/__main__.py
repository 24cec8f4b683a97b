"""The `obol` command-line tool."""


def main() -> None:
    raise SystemExit("obol: not yet implemented")
