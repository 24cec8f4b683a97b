"""obol_cli."""
