"""Fake obol_pricing (see fake_service.py)."""
