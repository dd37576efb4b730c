"""The source of truth: typed records (``records``), the SQL store and its repositories, runs, the keyword
index, and the Chroma vector store. Imports nothing from ``explainer`` or ``workers``."""
