"""Entry point: the HTTP API (FastAPI) and the search page, thin adapters over search, reports and the index."""
