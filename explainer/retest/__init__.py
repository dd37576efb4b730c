"""Re-test after a model change: collect the same units on a new checkpoint, re-score their stored
explanations on the new evidence, and say per unit whether each still holds (``explainer retest``)."""
