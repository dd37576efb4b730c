"""``POST /api/v1/steer``: steer, scale, clamp or ablate a stored unit on a prompt (a read key; it
changes nothing stored). The same function as ``explainer steer``; the body is checked by its
model (finite, bounded strength and target KL; a prompt with a visible character) before the
unit's model is loaded."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Security
from pydantic import BaseModel, ConfigDict, Field

from explainer.api import models as m
from explainer.intervene.hooks import MAX_STRENGTH
from explainer.intervene.service import DEFAULT_TARGET_KL, MAX_NEW_TOKENS, steer_unit
from explainer.settings import Settings

MAX_PROMPT_CHARS = 2000
MAX_TARGET_KL = 20.0

_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorBody, "description": desc}
    for code, desc in (
        (401, "no API key, or an unknown one"),
        (403, "the key may not use this route"),
        (404, "no such unit in the store"),
        (413, "request body too large"),
        (414, "query string too long"),
        (
            422,
            "invalid body (strength NaN, infinite or out of range, empty prompt, unknown mode), a unit whose "
            "model, SAE or directions file cannot be loaded here, or a target KL no strength reaches",
        ),
        (500, "internal error"),
    )
}


class _SteerBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit_id: str = Field(
        min_length=1, max_length=300, pattern=m.NO_NUL_RE, description="MODEL/HOOKPOINT/INDEX of a stored unit"
    )
    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, pattern=r"[^\s\x1c-\x1f\x85]", description="text to continue"
    )
    new_tokens: int = Field(20, ge=1, le=MAX_NEW_TOKENS, description="greedy tokens generated")
    top: int = Field(10, ge=1, le=50, description="tokens listed as risen and fallen")


Strength = Annotated[float, Field(ge=-MAX_STRENGTH, le=MAX_STRENGTH, allow_inf_nan=False)]


class SteerAdd(_SteerBase):
    """Add to the unit (``add``) or multiply it (``scale``) by a strength, or by the strength that
    reaches a target next-token KL on the prompt."""

    mode: Literal["add", "scale"]
    strength: Strength | None = Field(None, description="add: amount; scale: factor; null: found by bisection")
    target_kl: float | None = Field(
        None,
        gt=0,
        le=MAX_TARGET_KL,
        allow_inf_nan=False,
        description=f"KL to reach when strength is null (default {DEFAULT_TARGET_KL:g}); ignored with a strength",
    )


class SteerClamp(_SteerBase):
    """Set the unit's value to ``strength``."""

    mode: Literal["clamp"]
    strength: Strength = Field(description="the value the unit is clamped to")


class SteerAblate(_SteerBase):
    """Set the unit's value to zero or to its mean activation."""

    mode: Literal["ablate"]
    ablate_to: Literal["zero", "mean"] = "zero"


SteerRequest = Annotated[SteerAdd | SteerClamp | SteerAblate, Field(discriminator="mode")]


class TokenChangeView(BaseModel):
    token: str
    p_clean: float
    p_steered: float


class SteerResponse(BaseModel):
    unit_id: str
    kind: Literal["neuron", "feature", "direction"]
    mode: str
    strength: float | None = Field(description="the strength used (null for ablation)")
    ablate_to: str | None = None
    target_kl: float | None
    bisection_steps: int
    kl: float = Field(description="KL(clean ‖ steered) of the next-token distributions after the prompt, nats")
    prompt: str
    clean: str = Field(description="greedy continuation without the intervention")
    steered: str = Field(description="greedy continuation with it")
    risen: list[TokenChangeView]
    fallen: list[TokenChangeView]
    new_tokens: int
    seconds: float


def steer_router(settings: Settings, read: Any) -> APIRouter:
    """The steering route; ``read`` is the dependency that admits read (and write) keys."""
    router = APIRouter(prefix="/api/v1", responses=_RESPONSES)

    @router.post(
        "/steer",
        response_model=SteerResponse,
        dependencies=[Security(read)],
        tags=["interventions"],
        summary="Steer, scale, clamp or ablate one unit on a prompt: clean vs steered continuation, KL, token changes",
    )
    def steer_route(body: SteerRequest) -> dict[str, Any]:
        strength = getattr(body, "strength", None)
        return steer_unit(
            settings,
            body.unit_id,
            body.prompt,
            mode=body.mode,
            strength=strength,
            target_kl=getattr(body, "target_kl", None) if strength is None else None,
            ablate_to=getattr(body, "ablate_to", "zero"),
            max_new_tokens=body.new_tokens,
            top=body.top,
        )

    return router
