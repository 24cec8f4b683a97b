"""Fake obol_portal (see fake_service.py)."""
