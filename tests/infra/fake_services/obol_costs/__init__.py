"""Fake obol_costs (see fake_service.py)."""
