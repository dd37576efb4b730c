"""``POST /api/v1/monitor``: score prompt/response pairs with an audit's probe file (a read key; it
changes nothing stored). Probe files are served from ``DATA_DIR/probes/NAME.json`` and named in
the body, so a request can neither read other files nor make the server load a model of its
choosing. The same function as ``explainer monitor``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Security
from pydantic import BaseModel, ConfigDict, Field

from explainer.api import models as m
from explainer.settings import Settings

MAX_ITEMS = 32
MAX_TEXT_CHARS = 4000

_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorBody, "description": desc}
    for code, desc in (
        (401, "no API key, or an unknown one"),
        (403, "the key may not use this route"),
        (404, "no probe file of that name in DATA_DIR/probes"),
        (413, "request body too large"),
        (414, "query string too long"),
        (
            422,
            "invalid body (empty response, answer span outside the response, too many items), a domain the probe "
            "was not calibrated on (unless allow_uncalibrated), or a probe file or model that cannot be used here",
        ),
        (500, "internal error"),
    )
}


class MonitorItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=MAX_TEXT_CHARS)
    response: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"[^\s\x1c-\x1f\x85]")
    domain: str = Field(min_length=1, max_length=100, pattern=r"[^\s\x1c-\x1f\x85]")
    answer_span: tuple[int, int] | None = Field(None, description="characters [start, end) of the answer")


class MonitorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$", description="probe file name, without .json")
    items: list[MonitorItem] = Field(min_length=1, max_length=MAX_ITEMS)
    allow_uncalibrated: bool = Field(False, description="score domains the probe was not calibrated on (pooled)")


class MonitorResult(BaseModel):
    domain: str
    calibrated: bool = Field(description="false when the pooled calibration stood in for the domain's")
    logit: float = Field(description="the probe's logit of failure")
    p_fail: float = Field(description="calibrated probability of failure")
    threshold: float = Field(description="the domain's threshold on the logit")
    flagged: bool


class MonitorResponse(BaseModel):
    probe: str
    model: str
    hookpoint: str
    results: list[MonitorResult]


def monitor_router(settings: Settings, read: Any) -> APIRouter:
    """The monitoring route; ``read`` is the dependency that admits read (and write) keys."""
    router = APIRouter(prefix="/api/v1", responses=_RESPONSES)

    @router.post(
        "/monitor",
        response_model=MonitorResponse,
        dependencies=[Security(read)],
        tags=["audits"],
        summary="Score prompt/response pairs with an audit's probe: calibrated failure probability per domain",
    )
    def monitor_route(body: MonitorRequest) -> dict[str, Any]:
        from explainer.audit.probefile import monitor, read_probe
        from explainer.collect.models import load_model

        path = settings.data_dir / "probes" / f"{body.probe}.json"
        if not path.is_file():
            raise HTTPException(404, f"no probe named {body.probe!r}")
        doc = read_probe(path)
        items = [it.model_dump(exclude_none=True) for it in body.items]
        for it in items:
            if "answer_span" in it:
                it["answer_span"] = list(it["answer_span"])
        lm = load_model(doc.get("model_source") or doc["model"], settings.device)
        results = monitor(lm, doc, items, body.allow_uncalibrated)
        return {"probe": body.probe, "model": doc["model"], "hookpoint": doc["hookpoint"], "results": results}

    return router
