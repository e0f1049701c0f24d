"""Benchmarks that print their figures (run `make bench` or `python -m bench.<name>`)."""
