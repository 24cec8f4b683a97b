"""`python -m obol_wallet` for tests: a fake service."""

from fake_service import main

main("wallet")
