"""Fake obol_wallet (see fake_service.py)."""
