"""Which units a report covers: unit ids, a search's hits, a labeling run or collection, or
every labeled unit."""

from __future__ import annotations

from typing import Any

from explainer.report.model import ReportEntry, ReportMeta

__all__ = ["select_report", "resolve_run"]


def resolve_run(store: Any, run: str) -> str:
    """The whole labeling run or collection id that ``run`` (an id or a unique prefix of one) names;
    :class:`LookupError` when none or several do (the message says which)."""
    found = store.find_run_or_collection(run)
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise LookupError(f"unknown run or collection id {run!r}")
    raise LookupError(f"run or collection id {run!r} is ambiguous ({len(found)} match): give more of it")


def select_report(
    settings: Any,
    *,
    unit_ids: list[str] | None = None,
    query: str | None = None,
    filters: dict[str, Any] | None = None,
    run: str | None = None,
    limit: int = 20,
    generated_by: str = "",
    title: str = "Activation explanations",
    where: str | None = None,
) -> tuple[list[ReportEntry], ReportMeta]:
    """The entries and metadata of a report of ``unit_ids``, of the units a search for ``query``
    (with search ``filters``) returns, of a labeling run or collection ``run``, or of every
    labeled unit. Unknown unit ids raise :class:`UnknownUnitError` (all listed); an unknown run
    :class:`InputError`; a query without hits gives no entries and a note that says so. ``where``
    (the store's description) ends the messages of ids that are not found."""
    from explainer.errors import InputError, UnknownUnitError
    from explainer.report.entries import unit_entries
    from explainer.runtime import get_store

    if sum(x is not None for x in (unit_ids, query, run)) > 1:
        raise InputError("choose one of unit ids, a query or a run")
    store = get_store(settings)
    note, prefer, collection_id = None, None, None
    if unit_ids is not None:
        ids = list(dict.fromkeys(unit_ids))
        selection: dict[str, Any] = {"kind": "units", "unit_ids": ids}
    elif query is not None:
        from explainer.search.hybrid import SearchFilters, search

        f = {k: v for k, v in (filters or {}).items() if v is not None}
        ids = list(dict.fromkeys(h["unit_id"] for h in search(settings, query, SearchFilters(**f), limit)))
        selection = {"kind": "query", "query": query, "filters": f, "limit": limit}
        if not ids:
            note = (
                f"No units: the query {query!r} matched no explanation"
                + (" with these filters: " + ", ".join(f"{k}={v}" for k, v in f.items()) if f else "")
                + "."
            )
    elif run is not None:
        try:
            run = resolve_run(store, run)
        except LookupError as exc:
            raise InputError(str(exc) + (f" in {where}" if where else "")) from exc
        found = store.report_selection(run)
        if found is None:
            raise InputError(f"unknown run or collection id {run!r}" + (f" in {where}" if where else ""))
        ids, prefer, collection_id = found["unit_ids"], found["explanation_ids"], found["collection_id"]
        selection = {"kind": "run", "run": run, "run_kind": found["kind"], "collection_id": collection_id}
        if not ids:
            note = f"No units: {found['kind']} {run} has no explained units yet."
    else:
        ids = store.labeled_unit_ids()
        selection = {"kind": "all"}
        if not ids:
            note = "No units: nothing has been labeled yet."
    try:
        entries = unit_entries(settings, ids, collection_id, prefer=prefer) if ids else []
    except UnknownUnitError as exc:
        raise UnknownUnitError(exc.missing, where) from None
    return entries, ReportMeta(title=title, generated_by=generated_by, selection=selection, note=note)
