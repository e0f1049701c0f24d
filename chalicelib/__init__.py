"""Everything the deployed functions need, apart from app.py's wiring."""
