"""The project's one exception tree.

Every error the library raises on purpose derives from :class:`ExplainerError`, so a
caller (the CLI, a worker, the HTTP API) can catch one type and show a clear message
instead of a traceback. Errors of dependencies (transformers, openai, SQLAlchemy,
Chroma) are translated at the boundary where they happen, with ``raise ... from exc``.

::

    ExplainerError
    ├── ConfigError            bad settings or environment
    ├── InputError             bad user input
    │   ├── CorpusError        empty, missing or undecodable corpus
    │   ├── ModelLoadError     unknown model path or unloadable weights
    │   ├── HookpointError     unknown layer or hookpoint (lists the valid ones)
    │   ├── SAEError           unusable SAE or directions file (format, architecture, weights, width)
    │   ├── UnknownUnitError   unit ids that are not in the store
    │   └── InterventionError  an intervention that cannot be made (strength, prompt, unit kind, target KL)
    ├── LLMError               a call to an explainer/simulator LLM failed
    │   ├── TransientLLMError  worth retrying: timeouts, 429, 5xx, dropped connections
    │   └── PermanentLLMError  not worth retrying: auth, bad request, model missing
    ├── ParseError             the LLM answered, but not with something usable
    ├── ScoreError             a score cannot be computed (non-finite activations); stored as a failed score
    └── PromptTooLongError     the prompt cannot be shrunk to fit the context window
"""

from __future__ import annotations

__all__ = [
    "ExplainerError",
    "ConfigError",
    "InputError",
    "CorpusError",
    "ModelLoadError",
    "HookpointError",
    "SAEError",
    "UnknownUnitError",
    "InterventionError",
    "LLMError",
    "TransientLLMError",
    "PermanentLLMError",
    "ParseError",
    "ScoreError",
    "PromptTooLongError",
]


class ExplainerError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(ExplainerError):
    """Settings or environment variables are missing or invalid."""


class InputError(ExplainerError):
    """The user gave input the pipeline cannot use."""


class CorpusError(InputError):
    """The corpus is missing, empty or cannot be decoded."""


class ModelLoadError(InputError):
    """The subject or LLM model cannot be found or loaded."""


class HookpointError(InputError):
    """A layer or hookpoint name does not exist in the model."""


class SAEError(InputError):
    """An SAE, transcoder or directions file cannot be used: unknown format or architecture,
    missing or non-finite weights, or a width that does not match the hookpoint."""


class UnknownUnitError(InputError):
    """Unit ids were asked for that the store does not hold."""

    def __init__(self, missing: list[str], where: str | None = None):
        self.missing = list(missing)
        super().__init__("unknown unit id(s): " + ", ".join(self.missing) + (f" in {where}" if where else ""))


class InterventionError(InputError):
    """An intervention cannot be made as asked: a NaN, infinite or out-of-range strength, an empty
    prompt, a mode the unit's kind does not support, or a target KL no strength in range reaches."""


class LLMError(ExplainerError):
    """A call to an LLM failed.

    ``status`` is the HTTP status the endpoint answered (``None``: no answer, e.g. a timeout or a
    dropped connection, or a local model); ``retry_after`` the seconds the endpoint asked to wait
    before trying again (its ``Retry-After`` header), if it said. Callers decide on these, never
    on the message text.
    """

    def __init__(self, *args: object, status: int | None = None, retry_after: float | None = None):
        super().__init__(*args)
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the attributes across pickling (Celery results, process pools).
        return (_rebuild_llm_error, (type(self), self.args, self.status, self.retry_after))


class TransientLLMError(LLMError):
    """A failure that may succeed on retry (timeout, rate limit, server error)."""


class PermanentLLMError(LLMError):
    """A failure that will not go away on retry (auth, bad request, unknown model)."""


def _rebuild_llm_error(
    cls: type[LLMError], args: tuple[object, ...], status: int | None, retry_after: float | None
) -> LLMError:
    return cls(*args, status=status, retry_after=retry_after)


class ParseError(ExplainerError):
    """The LLM answered, but the answer is not a usable explanation or prediction."""


class ScoreError(ExplainerError):
    """A score cannot be computed from these activations (a NaN or infinity among the true or
    simulated values); the scorer stores a failed score with this reason, never a number."""


class PromptTooLongError(ExplainerError):
    """The prompt does not fit the model's context even after shrinking it."""
