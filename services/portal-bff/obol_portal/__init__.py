"""obol_portal."""
