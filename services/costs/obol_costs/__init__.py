"""obol_costs."""
