"""obol_wallet."""
