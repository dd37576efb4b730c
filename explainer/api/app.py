"""The HTTP API (FastAPI) and the web page it serves: thin adapters over search, views, reports
and the index maintenance functions that the CLI calls too.

Routes under ``/api/v1`` need an API key in the ``X-API-Key`` header: a *read* key for the
read routes, a *write* key (which also reads) for the ones that change state. Keys come from the
environment (``EXPLAINER_API_READ_KEYS``, ``EXPLAINER_API_WRITE_KEYS``, comma-separated); with
none configured, no request gets data. The page (``/``, ``/static/…``), ``/healthz`` and the
OpenAPI spec (``/openapi.json``) need no key and hold no data. Every error is JSON:
``{"error": {"status", "code", "message", "details"}}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Security
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import StringConstraints
from starlette.exceptions import HTTPException

from explainer import runtime
from explainer.api import models as m
from explainer.api.audit import monitor_router
from explainer.api.auth import API_KEY_HEADER, ApiConfig, key_dependencies, load_api_config
from explainer.api.errors import ERRORS, install_error_handlers
from explainer.api.intervene import steer_router
from explainer.llm.ratelimit import configure as configure_limits
from explainer.score.registry import InterventionScorerName
from explainer.search.hybrid import DEPTH, DOMAIN_RE, MAX_LIMIT, MAX_QUERY_CHARS, NAME_RE, SearchFilters
from explainer.settings import Settings, load_settings
from store.keyword import UnitSource

__all__ = ["ApiConfig", "load_api_config", "create_app"]

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_REPORT_UNITS = 50
MAX_RUNS_PAGE = 100


QUERY_RE = r"[^\s\x1c-\x1f\x85\x00]"
"""A query holds a character that is not blank for Python's ``str.strip`` (which also strips the
information separators U+001C–U+001F and U+0085) nor for the OpenAPI regex (``\\s``), and is not
NUL; other NULs in it are read as spaces (``search.hybrid.check_query``)."""
UnitId = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=m.NO_NUL_RE)]
Model = Annotated[
    str | None, Query(max_length=200, pattern=NAME_RE.pattern, description="subject model, e.g. smollm2-135m")
]
Layer = Annotated[int | None, Query(ge=0, le=10_000, description="block index of the hookpoint")]
Source = Annotated[
    UnitSource | None,
    Query(description="kind of unit: MLP neurons, residual stream, SAE features, directions, ..."),
]
MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0, description="lowest simulation score")]
MinIntervention = Annotated[
    float | None,
    Query(
        allow_inf_nan=False,
        description="lowest intervention (output-side) score; explanations without an ok one are left out",
    ),
]
InterventionScorer = Annotated[
    InterventionScorerName | None,
    Query(
        description="which intervention scorer min_intervention reads and hits show (their scales differ: "
        "log-probability for intervention and intervention-endpoint, cosine for intervention-embedding); "
        "default: the filter reads intervention, each hit shows the first intervention score it has"
    ),
]
Domain = Annotated[
    str | None,
    Query(
        max_length=200, pattern=DOMAIN_RE.pattern, description="corpus domain among the unit's top windows, e.g. legal"
    ),
]
ReportFormat = Annotated[Literal["html", "md", "json", "pdf"], Query(description="report format")]


def _api_router(settings: Settings, config: ApiConfig) -> APIRouter:
    read, write = key_dependencies(config)
    router = APIRouter(prefix="/api/v1", responses=ERRORS)

    @router.get(
        "/search",
        response_model=m.SearchPage,
        dependencies=[Security(read)],
        tags=["search"],
        summary="Search explanations by description (semantic + keyword, fused)",
    )
    def search_route(
        q: Annotated[
            str, Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=QUERY_RE, description="what the unit does")
        ],
        model: Model = None,
        layer: Layer = None,
        source: Source = None,
        min_score: MinScore = None,
        min_intervention: MinIntervention = None,
        intervention_scorer: InterventionScorer = None,
        domain: Domain = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 10,
        offset: Annotated[int, Query(ge=0, le=DEPTH - MAX_LIMIT, description="hits to skip")] = 0,
    ) -> dict[str, Any]:
        from explainer.search.hybrid import search_page

        filters = SearchFilters(
            model=model,
            layer=layer,
            source=source,
            min_score=min_score,
            domain=domain,
            min_intervention=min_intervention,
            intervention_scorer=intervention_scorer,
        )
        page = search_page(settings, q, filters, limit=limit, offset=offset)
        echoed = {**filters.sql(), "min_intervention": min_intervention, "intervention_scorer": intervention_scorer}
        return {"query": q, "filters": {k: v for k, v in echoed.items() if v is not None}, **page}

    @router.get(
        "/units/{unit_id:path}",
        response_model=m.UnitDetail,
        dependencies=[Security(read)],
        tags=["units"],
        summary="One unit: statistics, histogram, explanations, scores, windows",
    )
    def unit_route(
        unit_id: Annotated[
            str, PathParam(min_length=1, max_length=300, pattern=m.NO_NUL_RE, description="MODEL/HOOKPOINT/INDEX")
        ],
        collection_id: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-f]{1,64}$")] = None,
    ) -> dict[str, Any]:
        from explainer.report.entries import unit_detail

        return unit_detail(settings, unit_id, collection_id)

    @router.get(
        "/collections",
        response_model=m.CollectionsPage,
        dependencies=[Security(read)],
        tags=["runs"],
        summary="Collections and their labeling progress, newest first",
    )
    def collections_route(
        limit: Annotated[int, Query(ge=1, le=MAX_RUNS_PAGE)] = 20, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
    ) -> dict[str, Any]:
        from explainer.runtime import get_store

        store = get_store(settings)
        total = store.count_rows()["collections"]
        found = store.collection_summaries(limit=limit, offset=offset)
        return {
            "collections": found,
            "offset": offset,
            "limit": limit,
            "total": total,
            "next_offset": offset + limit if offset + limit < total else None,
        }

    @router.get(
        "/runs",
        response_model=m.RunsPage,
        dependencies=[Security(read)],
        tags=["runs"],
        summary="Labeling runs, newest first, with done / failed / pending units and tokens spent",
    )
    def runs_route(
        limit: Annotated[int, Query(ge=1, le=MAX_RUNS_PAGE)] = 20, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
    ) -> dict[str, Any]:
        from explainer.runtime import get_store
        from store import runs

        store = get_store(settings)
        total = runs.count_runs(store)
        return {
            "runs": runs.list_runs(store, limit=limit, offset=offset),
            "offset": offset,
            "limit": limit,
            "total": total,
            "next_offset": offset + limit if offset + limit < total else None,
        }

    @router.get(
        "/runs/{run_id}",
        response_model=m.RunDetail,
        dependencies=[Security(read)],
        tags=["runs"],
        summary="One labeling run: its counts and its first failures with their reasons",
    )
    def run_route(
        run_id: Annotated[
            str,
            PathParam(
                min_length=1, max_length=64, pattern=r"^[0-9a-f]+$", description="run id, or a unique prefix of it"
            ),
        ],
        failures: Annotated[int, Query(ge=0, le=MAX_RUNS_PAGE, description="failures listed")] = 50,
    ) -> dict[str, Any]:
        from explainer.runtime import get_store
        from store import runs

        store = get_store(settings)
        found = runs.find_runs(store, run_id)
        if len(found) != 1:
            raise HTTPException(404, f"no run {run_id!r}" if not found else f"run id {run_id!r} is ambiguous")
        detail = runs.run_detail(store, found[0], failures_limit=failures)
        if detail is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return detail

    report_types = {
        "html": "text/html; charset=utf-8",
        "md": "text/markdown; charset=utf-8",
        "json": "application/json",
        "pdf": "application/pdf",
    }
    report_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "text/markdown": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "the report in the asked format; JSON follows the published report "
            "schema (explainer/report/schemas/report.schema.json)",
        }
    }

    def report_response(entries: list[Any], meta: Any, fmt: str) -> Response:
        from explainer.report.render import render_report

        return Response(
            render_report(entries, fmt, meta, secrets=settings.secrets),
            media_type=report_types[fmt],
            headers={"Content-Disposition": f'inline; filename="report.{fmt}"'},
        )

    @router.get(
        "/reports",
        response_model=None,
        dependencies=[Security(read)],
        tags=["reports"],
        summary="An audit report of the given units (HTML, Markdown, JSON or PDF)",
        responses=report_responses,
    )
    def report_route(
        unit_id: Annotated[list[UnitId], Query(min_length=1, max_length=MAX_REPORT_UNITS)],
        format: ReportFormat = "html",
    ) -> Response:
        from explainer.report.select import select_report

        entries, meta = select_report(settings, unit_ids=unit_id, generated_by="explainer HTTP API")
        return report_response(entries, meta, format)

    @router.get(
        "/reports/search",
        response_model=None,
        dependencies=[Security(read)],
        tags=["reports"],
        summary="An audit report of the units a search returns (no hits: an empty report that says so)",
        responses=report_responses,
    )
    def report_search_route(
        q: Annotated[
            str, Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=QUERY_RE, description="what the unit does")
        ],
        model: Model = None,
        layer: Layer = None,
        source: Source = None,
        min_score: MinScore = None,
        domain: Domain = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="hits to report")] = 20,
        format: ReportFormat = "html",
    ) -> Response:
        from explainer.report.select import select_report

        filters = {"model": model, "layer": layer, "source": source, "min_score": min_score, "domain": domain}
        entries, meta = select_report(
            settings, query=q, filters=filters, limit=limit, generated_by="explainer HTTP API"
        )
        return report_response(entries, meta, format)

    @router.get(
        "/reports/runs/{run}",
        response_model=None,
        dependencies=[Security(read)],
        tags=["reports"],
        summary="An audit report of a labeling run's (or a collection's) explained units",
        responses=report_responses,
    )
    def report_run_route(
        run: Annotated[
            str,
            PathParam(
                min_length=1,
                max_length=64,
                pattern=r"^[A-Za-z0-9_.-]+$",
                description="a labeling run or collection id, or a unique prefix of one",
            ),
        ],
        format: ReportFormat = "html",
    ) -> Response:
        from explainer.report.select import resolve_run, select_report
        from explainer.runtime import get_store

        try:
            run = resolve_run(get_store(settings), run)  # a unique prefix works, as for /runs/{run_id}
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        entries, meta = select_report(settings, run=run, generated_by="explainer HTTP API")
        return report_response(entries, meta, format)

    @router.get(
        "/index/check",
        response_model=m.CheckResult,
        dependencies=[Security(read)],
        tags=["index"],
        summary="Differences between SQL and the search indexes",
    )
    def check_route() -> dict[str, Any]:
        from explainer.search.reindex import check

        return check(settings)

    @router.post(
        "/index/rebuild",
        response_model=m.ReindexResult,
        dependencies=[Security(write)],
        tags=["index"],
        summary="Rebuild the search indexes from SQL (write key)",
    )
    def rebuild_route() -> dict[str, Any]:
        from explainer.search.reindex import reindex

        return reindex(settings)

    return router


def create_app(settings: Settings | None = None, config: ApiConfig | None = None, warm_up: bool = False) -> FastAPI:
    """The API and web page for ``settings`` (default: from the environment) and ``config``
    (default: keys from the environment). ``warm_up`` loads the embedding model and the in-memory
    vector scan at start-up (without it, semantic ranking uses Chroma's filtered query)."""
    from contextlib import asynccontextmanager

    settings = settings or load_settings()
    config = config or load_api_config()
    configure_limits(settings)
    runtime.configure(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if warm_up:
            from explainer.runtime import get_index
            from explainer.search.hybrid import load_scan

            get_index(settings).embedder.embed_query("warm up")  # loads the model (and exports it to ONNX once)
            log.info("vector scan loaded: %d explanations", load_scan(settings))
        yield

    app = FastAPI(
        title="Activation explainer",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Search, inspect and report explanations of units inside language models. "
        f"Send an API key in the `{API_KEY_HEADER}` header.",
    )
    install_error_handlers(app)
    app.include_router(_api_router(settings, config))
    app.include_router(steer_router(settings, key_dependencies(config)[0]))
    app.include_router(monitor_router(settings, key_dependencies(config)[0]))

    @app.get("/healthz", response_model=m.Health, tags=["meta"], summary="Liveness (no key needed)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def serve(settings: Settings, config: ApiConfig, host: str, port: int) -> None:
    """Run the API and web page with uvicorn until stopped (``explainer serve``), models warmed up first."""
    import uvicorn

    uvicorn.run(create_app(settings, config, warm_up=True), host=host, port=port, log_level="info")
