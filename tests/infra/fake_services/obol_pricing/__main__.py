"""`python -m obol_pricing` for tests: a fake service."""

from fake_service import main

main("pricing")
