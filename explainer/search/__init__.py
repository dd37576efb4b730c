"""Stage 4, index and search: explanations embedded into Chroma and a keyword index, hybrid ranking with
filters, and the rebuild and consistency check of both indexes from SQL."""
