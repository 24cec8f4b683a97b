"""`python -m obol_costs` for tests: a fake service."""

from fake_service import main

main("costs")
