"""obol_core."""
