"""Stage 2, explain: turn a unit's top windows into a description, by the explainer LLM or the no-LLM
baseline."""
