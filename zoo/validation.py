"""Checks of user input shared by the zoo's models: each raises ``ValueError`` naming the bad
value and what would be accepted."""

from __future__ import annotations

import math
import operator
from typing import Any

import torch

__all__ = ["as_integer", "check_choice", "check_integer", "check_positive", "check_num_datapoints", "validate_data"]


def as_integer(value: Any) -> int | None:
    """``value`` as a Python int if it is an integer (Python's or NumPy's, not a bool), else
    ``None``."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_integer(model: str, key: str, value: Any, low: int, high: int, why: str = "") -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer in ``low..high``
    (NumPy integers are integers; bools are refused)."""
    number = as_integer(value)
    if number is None or not low <= number <= high:
        raise ValueError(f"{model}: {key} must be an integer in {low}..{high}{why}, got {value!r}")
    return number


def check_positive(model: str, key: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite positive number (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{model}: {key} must be a positive number, got {value!r}")


def check_choice(model: str, key: str, value: Any, accepted: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of the names ``accepted``."""
    if value not in accepted:
        raise ValueError(f"{model}: {key} must be one of {', '.join(map(repr, accepted))}, got {value!r}")


def check_num_datapoints(model: str, num_datapoints: Any) -> int:
    """``num_datapoints`` of a simulation, or ``ValueError`` unless it is a positive integer."""
    number = as_integer(num_datapoints)
    if number is None or number < 1:
        raise ValueError(f"{model}: num_datapoints must be a positive integer, got {num_datapoints!r}")
    return number


def validate_data(data: Any, *, name: str, ndim: tuple[int, ...], width: int | None = None,
                  integer: bool = False) -> torch.Tensor:
    """Check a user's dataset and return it as a float64 (or int64) tensor.

    Raises ``ValueError`` naming the bad value and what would be accepted.
    """
    if hasattr(data, "to_numpy") and not isinstance(data, torch.Tensor):  # a pandas DataFrame or Series
        raise ValueError(f"{name}: data must be a tensor or array of numbers, got a {type(data).__name__}; "
                         f"pass data.to_numpy(dtype=float)")
    if not isinstance(data, torch.Tensor):
        try:
            data = torch.as_tensor(data)
        except Exception as error:  # noqa: BLE001 - re-raised with context
            dtype = getattr(data, "dtype", None)
            raise ValueError(f"{name}: data must be a tensor or array of numbers, got {type(data).__name__}"
                             + (f" of dtype {dtype}" if dtype is not None else "")) from error
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
