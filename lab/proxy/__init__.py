"""A lab vantage point's network path: an HTTP forward proxy whose partition is a real fault."""
