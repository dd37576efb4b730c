"""Response models built from the store's record dataclasses, so the two cannot drift apart.

:func:`derived` makes a pydantic model whose record fields take their names and types from the
dataclass they show (a field renamed in the record is refused at import, a field retyped there
changes the API's type too); the view declares only what it computes. :data:`DERIVED` lists every
model made this way with where each of its fields comes from (a test checks them).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from pydantic import BaseModel, Field, create_model

__all__ = ["DERIVED", "Derivation", "From", "derived", "finite_type"]


@dataclasses.dataclass(frozen=True)
class From:
    """A record field shown under another name, of another record, or as a finite-only value."""

    field: str
    """The record's field."""
    name: str | None = None
    """The API's name for it when it differs."""
    record: type | None = None
    """The record it belongs to when it is not the model's own (e.g. a search hit's unit name)."""
    finite: bool = False
    """Floats become ``float | None``: the view writes ``None`` for a NaN or infinite value (JSON has none)."""
    description: str | None = None


@dataclasses.dataclass(frozen=True)
class Derivation:
    """How a response model derives from its record: API field name → where it is taken from."""

    record: type
    taken: dict[str, From]
    """Every field taken from a record (with ``record`` filled in); the model's other fields are the view's."""


DERIVED: dict[str, Derivation] = {}
"""Response model name → its :class:`Derivation`."""


def finite_type(t: Any) -> Any:
    """``t`` with each ``float`` in it made ``float | None`` (inside tuples too)."""
    if t is float:
        return float | None
    if typing.get_origin(t) is tuple:
        args = typing.get_args(t)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[finite_type(args[0]), ...]  # type: ignore[misc]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = tuple(dict.fromkeys(finite_type(a) for a in typing.get_args(t)))
        out = args[0]
        for a in args[1:]:
            out = out | a
        return out
    return t


def derived(
    name: str, record: type, fields: tuple[str | From, ...], doc: str | None = None, **view_fields: Any
) -> type[BaseModel]:
    """A response model named ``name``: its ``fields`` — each a field of the dataclass ``record``
    (its name and type as the record declares them), a :class:`From`, or the name of one of
    ``view_fields`` to place it there — then the remaining ``view_fields`` (``(type, Field(...))``)
    that the view computes."""
    taken: dict[str, From] = {}
    spec: dict[str, Any] = {}
    for f in fields:
        if isinstance(f, str) and f in view_fields:
            spec[f] = view_fields.pop(f)
            continue
        src = From(f) if isinstance(f, str) else f
        rec = src.record or record
        if src.field not in {x.name for x in dataclasses.fields(rec)}:
            raise TypeError(f"{rec.__name__} has no fields {[src.field]}")
        hint = typing.get_type_hints(rec)[src.field]
        api = src.name or src.field
        taken[api] = dataclasses.replace(src, record=rec)
        spec[api] = (finite_type(hint) if src.finite else hint, Field(description=src.description))
    model: type[BaseModel] = create_model(
        name,
        __doc__=doc or f"A view of :class:`{record.__name__}`.",
        __module__="explainer.api.models",
        **spec,
        **view_fields,
    )
    DERIVED[name] = Derivation(record, taken)
    return model
