"""`python -m obol_wallet.writebehind` for tests: a fake worker."""

from fake_service import main

main("writebehind", "OBOL_WRITEBEHIND_HEALTH_PORT")
