"""HMC/NUTS kernels that record per-draw sampler statistics for ArviZ's ``sample_stats``.

Pyro 1.9.2's kernels keep only running summaries (``_mean_accept_prob``, the list of
divergent iterations) and ``az.from_pyro`` recovers nothing but ``diverging`` (DESIGN.md §7).
These subclasses override three hooks of the installed kernels and read what each
transition leaves behind, without changing what the sampler does (same random draws,
same adaptation):

``diverging``
    whether ``kernel._divergences`` grew during the transition (Pyro appends to it only
    after warmup, so warmup draws always read False).
``step_size``
    ``kernel.step_size`` *before* the transition, i.e. the step size the transition used.
``n_steps``
    gradient evaluations of the potential during the transition: one per leapfrog step,
    plus, in warmup only, those of any step-size search the adapter runs. Counted by
    wrapping ``kernel.potential_fn``.
``tree_depth`` (NUTS only)
    number of trajectory doublings, Stan's ``treedepth__``: one more than the largest
    ``tree_depth`` argument the top level passes to ``_build_tree``.
``acceptance_rate``
    the transition's mean Metropolis acceptance probability (NUTS: averaged over the tree,
    as fed to dual averaging). Pyro stores only its running mean ``_mean_accept_prob``
    ``m_n = m_{n-1} + (a_n - m_{n-1}) / n`` (``n`` restarts at 1 after warmup), so
    ``a_n = m_{n-1} + n (m_n - m_{n-1})`` recovers it exactly up to rounding.
``lp``
    ``-kernel._potential_energy_last`` after the transition: the log joint density of the
    accepted state on the unconstrained space (Jacobian included), up to a constant.
``energy``
    the Hamiltonian just after the momentum refresh, ``K(r) + U(z)``, read in
    ``_sample_r``. Stan's ``energy__`` is the Hamiltonian of the selected state, which
    equals this up to the integrator's energy error; BFMI (the spread of energy changes
    caused by momentum resampling) is defined by exactly this quantity.

:func:`RecordingHMC.sample_stats` returns the post-warmup records as ``(num_samples,)``
tensors; :func:`concatenate_sample_stats` joins chains in the order their draws are joined.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pyro.infer.mcmc.hmc import HMC
from pyro.infer.mcmc.nuts import NUTS

__all__ = ["RecordingHMC", "RecordingNUTS", "SAMPLE_STAT_NAMES", "concatenate_sample_stats"]

#: Every statistic a recording kernel may produce (``tree_depth`` only for NUTS).
SAMPLE_STAT_NAMES: tuple[str, ...] = ("diverging", "step_size", "n_steps", "tree_depth",
                                      "acceptance_rate", "lp", "energy")


class _GradientCounter:
    """Counts calls of a potential whose inputs require grad (about to be differentiated)."""

    def __init__(self, potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> None:
        self.potential_fn = potential_fn
        self.grad_evals = 0

    def __call__(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if any(v.requires_grad for v in params.values()):
            self.grad_evals += 1
        return self.potential_fn(params)


class _RecordingMixin:
    """Records per-transition statistics around ``HMC.sample`` / ``NUTS.sample``."""

    _records: list[dict[str, Any]]
    _energy_at_refresh: float
    _max_tree_depth_seen: int

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        # A new run starts a new record (Pyro's cleanup() resets the kernel's own counters,
        # so the records are the only per-draw account that survives MCMC.run()).
        self._records = []
        super().setup(warmup_steps, *args, **kwargs)  # type: ignore[misc]

    def _ensure_recording(self) -> None:
        if not hasattr(self, "_records"):
            self._records = []
        if not isinstance(self.potential_fn, _GradientCounter):  # type: ignore[attr-defined]
            self.potential_fn = _GradientCounter(self.potential_fn)  # type: ignore[attr-defined]

    def _sample_r(self, name: str) -> Any:
        r, r_unscaled = super()._sample_r(name)  # type: ignore[misc]
        # The cache holds the current state's potential energy at this point (sample()
        # fills it before refreshing the momentum).
        kinetic = self._kinetic_energy(r_unscaled)  # type: ignore[attr-defined]
        self._energy_at_refresh = float(kinetic + self._potential_energy_last)  # type: ignore[attr-defined]
        return r, r_unscaled

    def _build_tree(self, z: Any, r: Any, z_grads: Any, log_slice: Any, direction: Any, tree_depth: int,
                    energy_current: Any) -> Any:
        self._max_tree_depth_seen = max(self._max_tree_depth_seen, tree_depth)
        return super()._build_tree(z, r, z_grads, log_slice, direction, tree_depth,  # type: ignore[misc]
                                   energy_current)

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._ensure_recording()
        counter: _GradientCounter = self.potential_fn  # type: ignore[attr-defined]
        warmup = self._t < self._warmup_steps  # type: ignore[attr-defined]
        step_size = float(self.step_size)  # type: ignore[attr-defined]
        divergences_before = len(self._divergences)  # type: ignore[attr-defined]
        grad_before = counter.grad_evals
        mean_before = float(self._mean_accept_prob)  # type: ignore[attr-defined]
        self._energy_at_refresh = float("nan")
        self._max_tree_depth_seen = -1
        out = super().sample(params)  # type: ignore[misc]
        t, warmup_steps = self._t, self._warmup_steps  # type: ignore[attr-defined]
        n = t - warmup_steps if t > warmup_steps else t
        mean_after = float(self._mean_accept_prob)  # type: ignore[attr-defined]
        record = {
            "warmup": warmup,
            "diverging": len(self._divergences) > divergences_before,  # type: ignore[attr-defined]
            "step_size": step_size,
            "n_steps": counter.grad_evals - grad_before,
            "acceptance_rate": mean_before + n * (mean_after - mean_before),
            "lp": -float(self._potential_energy_last),  # type: ignore[attr-defined]
            "energy": self._energy_at_refresh,
        }
        if isinstance(self, NUTS):
            record["tree_depth"] = self._max_tree_depth_seen + 1
        self._records.append(record)
        return out

    def sample_stats(self) -> dict[str, torch.Tensor]:
        """Post-warmup statistics, name -> ``(num_samples,)`` tensor (bool for ``diverging``,
        int64 for step and depth counts, float64 otherwise)."""
        kept = [r for r in getattr(self, "_records", []) if not r["warmup"]]
        out: dict[str, torch.Tensor] = {}
        for name in SAMPLE_STAT_NAMES:
            if kept and name in kept[0]:
                values = [r[name] for r in kept]
                dtype = (torch.bool if name == "diverging" else
                         torch.int64 if name in ("n_steps", "tree_depth") else torch.float64)
                out[name] = torch.tensor(values, dtype=dtype)
        return out


class RecordingHMC(_RecordingMixin, HMC):
    """Pyro's :class:`~pyro.infer.mcmc.HMC`, recording per-draw statistics (module docstring)."""


class RecordingNUTS(_RecordingMixin, NUTS):
    """Pyro's :class:`~pyro.infer.mcmc.NUTS`, recording per-draw statistics (module docstring)."""


def concatenate_sample_stats(per_chain: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join per-chain statistics along the draw axis (chains in order), keeping only the
    statistics every chain recorded."""
    if not per_chain:
        return {}
    names = [n for n in per_chain[0] if all(n in c for c in per_chain)]
    return {n: torch.cat([c[n] for c in per_chain]) for n in names}
