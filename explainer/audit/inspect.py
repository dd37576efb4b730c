"""A readable activation summary of one text: ``explainer inspect``.

The text runs through the subject model up to a hookpoint (optionally through an SAE or a
directions file), and for each token the *explained* units most active there are listed with their
explanations and scores. A unit's activation is put on the 0–10 scale of its maximum over its
collection (the scale its explanation was written and scored on), so units of very different
magnitudes compare. Only units with an ok explanation in the store are shown: the point is to read
the text through what the units are said to do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from explainer.audit.cases import CaseSetError

MAX_TEXT_CHARS = 20_000


def inspect_text(
    lm: Any,
    store: Any,
    text: str,
    hookpoint: str,
    *,
    sae: str | None = None,
    directions: str | None = None,
    top: int = 3,
    min_level: int = 3,
) -> dict[str, Any]:
    """Per token of ``text``, up to ``top`` explained units at level ``min_level`` or more (0–10)."""
    import torch

    from explainer.audit.stats import unit_space
    from explainer.collect.hooks import capture
    from explainer.score.meaning import score_kind, score_meaning

    if not text.strip():
        raise CaseSetError("the text to inspect is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise CaseSetError(f"the text has {len(text)} characters; inspect takes at most {MAX_TEXT_CHARS}")
    if top < 1 or not 0 <= min_level <= 10:
        raise CaseSetError("--top must be at least 1 and --min-level between 0 and 10")
    space = dataclasses.replace(unit_space(lm, hookpoint, sae=sae, directions=directions), statistic="activation")
    prefix = space.id_prefix + "/"
    expls = {e.unit_id: e for e in store.ok_explanations_under(prefix)}  # the newest ok one per unit
    if not expls:
        raise CaseSetError(
            f"no unit of {space.id_prefix} has an explanation in the store: label some first "
            f"(explainer label … --hookpoint {space.hookpoint.name})"
        )
    records = store.get_records(list(expls))
    index = {uid: int(uid.rsplit("/", 1)[1]) for uid in expls}
    unit_max = {uid: float(records[uid][1].stats.max) for uid in expls if uid in records}
    scores: dict[str, Any] = {}
    for s in store.scores_for([e.id for e in expls.values()]):
        if s.status == "ok" and s.value is not None:
            scores.setdefault(s.explanation_id, s)  # the first ok score stored
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = torch.tensor([enc["input_ids"]], device=lm.device)
    acts = capture(lm.model, space.hookpoint, ids, torch.ones_like(ids))[0]
    with torch.no_grad():
        if space.encoder is not None:
            acts = space.encoder.encode(acts).float()
    uids = [u for u in expls if u in unit_max and unit_max[u] > 0]
    if not uids:
        raise CaseSetError(f"the explained units of {space.id_prefix} never fired in their collections")
    cols = np.array([index[u] for u in uids], dtype=np.int64)
    scale = np.array([unit_max[u] for u in uids])
    values = acts.cpu().numpy()[:, cols]
    levels = np.clip(np.round(10 * values / scale), 0, 10).astype(int)
    tokens = []
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        order = np.argsort(-values[t] / scale)
        units = []
        for j in order[:top]:
            if levels[t, j] < min_level:
                break
            e = expls[uids[j]]
            s = scores.get(e.id)
            units.append(
                {
                    "unit_id": uids[j],
                    "level": int(levels[t, j]),
                    "activation": round(float(values[t, j]), 5),
                    "explanation": e.text,
                    "score": None
                    if s is None
                    else {
                        "scorer": s.scorer,
                        "value": s.value,
                        "meaning": score_meaning(s.value, s.ci_low, s.ci_high, kind=score_kind(s.details))["level"],
                    },
                }
            )
        tokens.append({"token": text[start:end], "start": start, "end": end, "units": units})
    return {
        "model": lm.name,
        "hookpoint": space.id_prefix.split("/", 1)[1],
        "explained_units": len(uids),
        "top": top,
        "min_level": min_level,
        "tokens": tokens,
    }
