"""Explanations in and out of other tools' formats: OpenAI's neuron-explainer, Neuronpedia and
EleutherAI's delphi.

- :mod:`~explainer.formats.record` — the portable record every reader returns and every writer takes;
- :mod:`~explainer.formats.read` — the three formats → records (bad files are one-line InputErrors);
- :mod:`~explainer.formats.write` — records → the three formats, written whole or not at all;
- :mod:`~explainer.formats.exchange` — the store ↔ records: ``explainer export`` and ``explainer import``.
"""

from explainer.formats.record import FORMATS, PortableExplanation, PortableScore, Sequence

__all__ = ["FORMATS", "PortableExplanation", "PortableScore", "Sequence"]
