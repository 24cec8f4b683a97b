"""`python -m obol_portal` for tests: a fake service."""

from fake_service import main

main("portal")
