"""Stage 3, score: the ``Scorer`` protocol and its result (``base``), the correlation, each simulator and
classifier scorer, and the registry that builds them by name."""
