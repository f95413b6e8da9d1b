"""The pydantic base of every configuration model: strict about what a number is.

- unknown fields are refused (``extra="forbid"``) and models are frozen;
- NaN and infinities are refused in every float field (TOML accepts ``nan`` and ``inf``);
- a boolean is not a number: ``n = true`` is refused for a count, ``tau_m = true`` for a
  time constant (pydantic would read them as 1);
- integer fields take integers only (``chunk_steps = 1e12`` is a float in TOML: refused,
  rather than silently accepted).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

__all__ = ["NonNegativeInt", "PositiveInt", "StrictModel"]

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(arg) for arg in typing.get_args(annotation))
    return annotation is Any


class StrictModel(BaseModel):
    """The base of every config model: unknown fields refused, frozen, no NaN or infinity, no booleans as
    numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            wrong = [
                name
                for name, value in data.items()
                if isinstance(value, bool)
                and (field := cls.model_fields.get(name)) is not None
                and not _admits_bool(field.annotation)
            ]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: expected a number or text, not a boolean")
        return data
