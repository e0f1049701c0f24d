"""Usage analytics: partition maintenance, one SQL layer (Athena or DuckDB), usage reports."""
