"""Fake obol_wallet.writebehind (see fake_service.py)."""
