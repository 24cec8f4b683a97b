"""`obol bench` (what `make bench` runs): Obol's wallet hot path measured side by side with
the "just use Postgres" baseline, in one run on this machine. See bench/README.md."""
