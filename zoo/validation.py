"""Checks of user input shared by the zoo's models: each raises ``ValueError`` naming the bad
value and what would be accepted."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["check_integer", "check_positive", "check_num_datapoints", "validate_data"]


def check_integer(model: str, key: str, value: Any, low: int, high: int, why: str = "") -> None:
    """Raise ``ValueError`` unless ``value`` is an integer in ``low..high`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{model}: {key} must be an integer in {low}..{high}{why}, got {value!r}")


def check_positive(model: str, key: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite positive number (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{model}: {key} must be a positive number, got {value!r}")


def check_num_datapoints(model: str, num_datapoints: Any) -> int:
    """``num_datapoints`` of a simulation, or ``ValueError`` unless it is a positive integer."""
    if isinstance(num_datapoints, bool) or not isinstance(num_datapoints, int) or num_datapoints < 1:
        raise ValueError(f"{model}: num_datapoints must be a positive integer, got {num_datapoints!r}")
    return num_datapoints


def validate_data(data: Any, *, name: str, ndim: tuple[int, ...], width: int | None = None,
                  integer: bool = False) -> torch.Tensor:
    """Check a user's dataset and return it as a float64 (or int64) tensor.

    Raises ``ValueError`` naming the bad value and what would be accepted.
    """
    if not isinstance(data, torch.Tensor):
        try:
            data = torch.as_tensor(data)
        except Exception as error:  # noqa: BLE001 - re-raised with context
            raise ValueError(f"{name}: data must be a tensor or array, got {type(data).__name__}") from error
    if data.ndim not in ndim:
        accepted = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name}: data must be {accepted}, got shape {tuple(data.shape)}")
    if data.shape[0] < 1:
        raise ValueError(f"{name}: data must hold at least one observation, got shape {tuple(data.shape)}")
    if width is not None and data.ndim == 2 and data.shape[1] != width:
        raise ValueError(
            f"{name}: data must have {width} column(s) to match the model, got shape {tuple(data.shape)}"
        )
    if integer:
        if data.is_floating_point() and not torch.equal(data, data.round()):
            raise ValueError(f"{name}: data must be integer-valued, got dtype {data.dtype} with fractions")
        return data.long()
    if not (data.is_floating_point() or data.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name}: data must be real-valued, got dtype {data.dtype}")
    data = data.to(torch.float64)
    if not torch.isfinite(data).all():
        bad = (~torch.isfinite(data)).nonzero()[0].tolist()
        raise ValueError(f"{name}: data must be finite, found {data[tuple(bad)].item()} at index {bad}")
    return data
