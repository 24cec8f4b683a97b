"""Tests of the developer tooling (embedded servers, process runner, `obol` CLI) and the
helpers behind the suite-wide fixtures in tests/conftest.py."""
