"""The LLM seam: chat clients for the explainer (in-process SmolLM2 or any OpenAI-compatible endpoint), rate
limits shared across processes, and the versioned prompt templates in ``prompts/``."""
