"""The seam between the entry points and whatever runs labeling chains: a small protocol.

The CLI needs things it cannot do alone: send ``explain → score → index`` chains (one per group of units) to
workers (or an in-process worker), and run a collection or an audit on a GPU host's ``collect`` queue. Both are
Celery's job, and Celery lives in the ``workers`` package, which sits *above* ``explainer`` (it
imports the stages). So the CLI receives an implementation of :class:`LabelBackend` from the
process's entry point (``workers.cli``) instead of importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from explainer.pipeline.options import LabelOptions
from explainer.settings import Settings


@dataclass(frozen=True)
class BatchResult:
    """What one invocation of a labeling run did."""

    run_id: str
    unit_ids: list[str]
    task_errors: dict[str, str]
    """Unit id → error of a chain that raised (a bug or an infrastructure fault), not a recorded failure."""
    seconds: float
    submitted: int = 0
    """Chains sent by this invocation."""
    skipped: int = 0
    """Units already done (or failed, without ``retry_failed``) before this invocation."""
    counts: dict[str, int] = field(default_factory=dict)
    """The run's done / failed / pending / units / tokens after this invocation."""


class LabelBackend(Protocol):
    """Runs labeling chains and remote collections (implemented by ``workers.backend.CeleryBackend``)."""

    def label_units(
        self, settings: Settings, collection_id: str, unit_ids: list[str], opts: LabelOptions, progress: bool = True
    ) -> BatchResult:
        """Label ``unit_ids`` of ``collection_id`` as one resumable run; returns when its chains finished."""
        ...

    def collect_on_worker(
        self,
        settings: Settings,
        model: str,
        hookpoint: str | None,
        corpus: str | None,
        config: dict[str, Any],
        sae: str | None,
        directions: str | None,
        notice: Callable[[str], None] | None = None,
    ) -> str:
        """Run a collection on a worker of the ``collect`` queue; returns its collection id."""
        ...

    def collect_sharded(
        self,
        settings: Settings,
        model: str,
        hookpoint: str | None,
        corpus: str | None,
        config: dict[str, Any],
        sae: str | None,
        directions: str | None,
        n_shards: int,
        notice: Callable[[str], None] | None = None,
    ) -> str:
        """Run a collection as ``n_shards`` tasks on the ``collect`` queue plus a merge; returns its id."""
        ...

    def audit_on_worker(
        self, settings: Settings, params: dict[str, Any], notice: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """Run a failure-mode audit (``run_audit``'s keyword arguments) on a worker of the ``collect`` queue."""
        ...
