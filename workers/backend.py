"""The Celery implementation of :class:`explainer.pipeline.backend.LabelBackend`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from explainer.pipeline.backend import BatchResult
from explainer.pipeline.options import LabelOptions
from explainer.settings import Settings
from workers import batch


class CeleryBackend:
    """Label chains and remote collections through Celery: the configured broker's workers, or an
    in-process worker over the memory transport when no broker is configured."""

    def label_units(
        self, settings: Settings, collection_id: str, unit_ids: list[str], opts: LabelOptions, progress: bool = True
    ) -> BatchResult:
        return batch.label_units(settings, collection_id, unit_ids, opts, progress=progress)

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
        return batch.collect_on_worker(settings, model, hookpoint, corpus, config, sae, directions, notice=notice)

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
        from workers.collect_shards import collect_sharded

        return collect_sharded(settings, model, hookpoint, corpus, config, sae, directions, n_shards, notice=notice)

    def audit_on_worker(
        self, settings: Settings, params: dict[str, Any], notice: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        return batch.audit_on_worker(settings, params, notice=notice)
