"""Audit reports: the report model built from the store, then one renderer per format (HTML, Markdown,
JSON, PDF) and the warnings they all show."""
