"""obol_pricing."""
