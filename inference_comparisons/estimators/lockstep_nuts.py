"""NUTS for many chains in lockstep: multinomial NUTS built iteratively, one batched
gradient per leapfrog step for every chain still growing its tree.

Each iteration draws a momentum for all C chains and doubles every chain's trajectory, in
a direction drawn per chain, until the chain's tree makes a U-turn, diverges or reaches
``max_tree_depth``. All chains build their depth-j subtrees together, leaf by leaf: leaf n
of every active chain is one call of
:meth:`~inference_comparisons.estimators.potential.FlatPotential.batch_potential_and_grad`
on the chains still building (those that stopped are not evaluated, so the gradient count
is NUTS's own). An iteration lasts as long as its deepest tree: the price of lockstep,
which ChEES (:mod:`~inference_comparisons.estimators.chees`) avoids by giving every chain
the same trajectory.

The tree is the iterative form of Hoffman & Gelman (2014) with Betancourt's (2017,
"A conceptual introduction to Hamiltonian Monte Carlo", appendix A) multinomial sampling,
as NumPyro writes it (``numpyro.infer.hmc_util``) and Stan runs it:

- within a subtree, the proposal is drawn progressively, a new leaf replacing it with
  probability w_leaf / W_subtree; a finished subtree's proposal replaces the tree's with
  probability min(1, W_subtree / W_tree) (the biased progressive sampling that favours
  moving away from the start);
- the U-turn criterion is the generalised one, with Stan's correction: a trajectory with
  end momenta p⁻, p⁺ and momentum sum ρ turns when (M⁻¹p⁻)·(ρ - (p⁻ + p⁺)/2) <= 0 or
  (M⁻¹p⁺)·(ρ - (p⁻ + p⁺)/2) <= 0; inside a subtree every balanced sub-subtree ending at the
  new leaf is checked, from momentum checkpoints kept at even leaves (the leaf index's bits
  say which, NumPyro's ``_leaf_idx_to_ckpt_idxs``); a subtree that turns or diverges is
  discarded;
- a leaf whose energy exceeds the start's by more than
  :data:`~inference_comparisons.estimators.lockstep.MAX_ENERGY_ERROR` (or is not finite)
  is a divergence and ends the chain's tree.

Warm-up is shared across chains: the step size by dual averaging of the chains' mean
acceptance statistic towards 0.8 (Stan's default), the diagonal mass matrix from the
variance across chains in Stan's windows
(:class:`~inference_comparisons.estimators.lockstep.MassAdaptation`). After warm-up the
step size is dual averaging's final average and the kernel is fixed, so it leaves the
target invariant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro.ops.dual_averaging import DualAveraging

from inference_comparisons.estimators.lockstep import (MAX_ENERGY_ERROR, Batch, LockstepChains, begin_warmup,
                                                       initial_step_size, start_chains)
from inference_comparisons.estimators.potential import FlatPotential

__all__ = ["NUTSSettings", "checkpoint_range", "nuts_transition", "run_lockstep_nuts", "run_fixed_nuts"]


@dataclass(frozen=True)
class NUTSSettings:
    """Stan's defaults: acceptance statistic 0.8, trees of at most 2^10 - 1 leapfrog steps."""

    target_acceptance: float = 0.8
    max_tree_depth: int = 10


def checkpoint_range(leaf: int) -> tuple[int, int]:
    """For leaf ``leaf`` (from 0) of a subtree: the checkpoints (from ``low`` to ``high``,
    empty when low > high) whose balanced sub-subtrees end at this leaf. An even leaf
    starts sub-subtrees (its momentum is stored at checkpoint ``high``); an odd leaf ends
    as many as it has trailing one bits, e.g. 6 -> (3, 2), 7 -> (0, 2), 13 -> (2, 2)."""
    high = bin(leaf >> 1).count("1")
    trailing_ones = bin((~leaf & (leaf + 1)) - 1).count("1")
    return high - trailing_ones + 1, high


def _turning(inverse_mass: torch.Tensor, left: torch.Tensor, right: torch.Tensor, total: torch.Tensor
             ) -> torch.Tensor:
    """The generalised U-turn criterion with Stan's correction (module docstring), per chain."""
    centred = total - 0.5 * (left + right)
    return ((inverse_mass * left * centred).sum(-1) <= 0) | ((inverse_mass * right * centred).sum(-1) <= 0)


@dataclass
class _Tree:
    """Every chain's trajectory so far: its two ends (position, momentum, gradient), its
    proposal, log weight, momentum sum, and why it stopped."""

    x_left: torch.Tensor
    p_left: torch.Tensor
    grad_left: torch.Tensor
    x_right: torch.Tensor
    p_right: torch.Tensor
    grad_right: torch.Tensor
    proposal: Batch
    log_weight: torch.Tensor
    p_sum: torch.Tensor
    turning: torch.Tensor
    diverging: torch.Tensor


@dataclass
class _Subtree:
    """The subtree the active chains are building: its growing end, proposal, log weight,
    momentum sum, the momentum checkpoints, and whether it turned or diverged."""

    x: torch.Tensor
    p: torch.Tensor
    grad: torch.Tensor
    proposal: Batch
    log_weight: torch.Tensor
    p_sum: torch.Tensor
    p_checkpoints: torch.Tensor
    sum_checkpoints: torch.Tensor
    turning: torch.Tensor
    diverging: torch.Tensor


def _where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``mask`` (per chain), else ``old``, for tensors (C,) or (C, ...)."""
    return torch.where(mask.reshape(mask.shape + (1,) * (new.dim() - 1)), new, old)


def _build_subtree(space: FlatPotential, tree: _Tree, active: torch.Tensor, forward: torch.Tensor, depth: int,
                   step_size: float, inverse_mass: torch.Tensor, initial_energy: torch.Tensor,
                   stats: dict[str, torch.Tensor]) -> _Subtree:
    """Every ``active`` chain's depth-``depth`` subtree (2^depth leaves) from the end of its
    tree in its direction (``forward``: to the right); chains leave as their subtree turns or
    diverges. ``stats`` accumulates each chain's acceptance statistics and leapfrog steps."""
    num_chains, dim = tree.x_left.shape
    x = _where(forward, tree.x_right, tree.x_left)
    sub = _Subtree(x=x, p=_where(forward, tree.p_right, tree.p_left), grad=_where(forward, tree.grad_right, tree.grad_left),
                   proposal=Batch(x.clone(), torch.zeros(num_chains, dtype=x.dtype), torch.zeros_like(x)),
                   log_weight=torch.full((num_chains,), -math.inf, dtype=x.dtype), p_sum=torch.zeros_like(x),
                   p_checkpoints=torch.zeros(num_chains, max(depth, 1), dim, dtype=x.dtype),
                   sum_checkpoints=torch.zeros(num_chains, max(depth, 1), dim, dtype=x.dtype),
                   turning=torch.zeros(num_chains, dtype=torch.bool), diverging=torch.zeros(num_chains, dtype=torch.bool))
    signed_step = torch.where(forward, step_size, -step_size).unsqueeze(-1)
    building = active.clone()
    for leaf in range(2 ** depth):
        chains = building.nonzero().squeeze(-1)
        if len(chains) == 0:
            break
        eps = signed_step[chains]
        p = sub.p[chains] - 0.5 * eps * sub.grad[chains]
        x = sub.x[chains] + eps * inverse_mass * p
        potential, grad = space.batch_potential_and_grad(x)
        p = p - 0.5 * eps * grad
        energy_error = potential + 0.5 * (inverse_mass * p ** 2).sum(-1) - initial_energy[chains]
        diverging = ~(energy_error <= MAX_ENERGY_ERROR)  # NaN too
        leaf_log_weight = torch.where(diverging, torch.full_like(energy_error, -math.inf), -energy_error)
        stats["accept_sum"][chains] += torch.where(diverging, torch.zeros_like(energy_error),
                                                   (-energy_error).clamp(max=0).exp())
        stats["n_steps"][chains] += 1
        # Progressive uniform sampling within the subtree: the new leaf replaces the proposal
        # with probability w_leaf / (W_subtree + w_leaf).
        log_weight = torch.logaddexp(sub.log_weight[chains], leaf_log_weight)
        take = torch.rand(len(chains), dtype=x.dtype).log() < leaf_log_weight - log_weight
        take &= ~diverging
        sub.proposal.x[chains] = _where(take, x, sub.proposal.x[chains])
        sub.proposal.potential[chains] = torch.where(take, potential, sub.proposal.potential[chains])
        sub.proposal.grad[chains] = _where(take, grad, sub.proposal.grad[chains])
        sub.log_weight[chains] = log_weight
        sub.x[chains], sub.p[chains], sub.grad[chains] = x, p, grad
        p_sum = sub.p_sum[chains] + p
        sub.p_sum[chains] = p_sum
        low, high = checkpoint_range(leaf)
        if leaf % 2 == 0:
            sub.p_checkpoints[chains, high] = p
            sub.sum_checkpoints[chains, high] = p_sum
        turning = torch.zeros(len(chains), dtype=torch.bool)
        for index in range(high, low - 1, -1):  # every balanced sub-subtree ending at this leaf
            start_p = sub.p_checkpoints[chains, index]
            turning |= _turning(inverse_mass, start_p, p, p_sum - sub.sum_checkpoints[chains, index] + start_p)
        sub.turning[chains] |= turning & ~diverging
        sub.diverging[chains] |= diverging
        building[chains] = ~(turning | diverging)
    return sub


def nuts_transition(space: FlatPotential, state: Batch, step_size: float, inverse_mass: torch.Tensor,
                    max_tree_depth: int) -> tuple[Batch, dict[str, torch.Tensor]]:
    """One NUTS iteration of every chain (module docstring); the new state and per-chain
    statistics: mean acceptance statistic, divergence, energy, log density, leapfrog steps
    and tree depth."""
    num_chains = len(state.x)
    momentum = torch.randn_like(state.x) / inverse_mass.sqrt()
    initial_energy = state.potential + 0.5 * (inverse_mass * momentum ** 2).sum(-1)
    tree = _Tree(state.x, momentum, state.grad, state.x, momentum, state.grad,
                 Batch(state.x.clone(), state.potential.clone(), state.grad.clone()),
                 torch.zeros(num_chains, dtype=state.x.dtype), momentum.clone(),
                 torch.zeros(num_chains, dtype=torch.bool), torch.zeros(num_chains, dtype=torch.bool))
    stats = {"accept_sum": torch.zeros(num_chains, dtype=state.x.dtype),
             "n_steps": torch.zeros(num_chains, dtype=torch.int64),
             "tree_depth": torch.zeros(num_chains, dtype=torch.int64)}
    for depth in range(max_tree_depth):
        active = ~(tree.turning | tree.diverging)
        if not bool(active.any()):
            break
        forward = torch.rand(num_chains) < 0.5
        sub = _build_subtree(space, tree, active, forward, depth, step_size, inverse_mass, initial_energy, stats)
        stats["tree_depth"] += active.long()
        valid = active & ~(sub.turning | sub.diverging)
        right, left = valid & forward, valid & ~forward
        tree.x_right, tree.p_right, tree.grad_right = (_where(right, sub.x, tree.x_right),
                                                       _where(right, sub.p, tree.p_right),
                                                       _where(right, sub.grad, tree.grad_right))
        tree.x_left, tree.p_left, tree.grad_left = (_where(left, sub.x, tree.x_left), _where(left, sub.p, tree.p_left),
                                                    _where(left, sub.grad, tree.grad_left))
        # Biased progressive sampling: the subtree's proposal replaces the tree's with
        # probability min(1, W_subtree / W_tree).
        take = valid & (torch.rand(num_chains, dtype=state.x.dtype).log() < sub.log_weight - tree.log_weight)
        tree.proposal = Batch(_where(take, sub.proposal.x, tree.proposal.x),
                              torch.where(take, sub.proposal.potential, tree.proposal.potential),
                              _where(take, sub.proposal.grad, tree.proposal.grad))
        tree.log_weight = torch.where(valid, torch.logaddexp(tree.log_weight, sub.log_weight), tree.log_weight)
        tree.p_sum = _where(valid, tree.p_sum + sub.p_sum, tree.p_sum)
        tree.turning |= active & (sub.turning | (valid & _turning(inverse_mass, tree.p_left, tree.p_right,
                                                                  tree.p_sum)))
        tree.diverging |= active & sub.diverging
    return tree.proposal, {
        "acceptance_rate": stats["accept_sum"] / stats["n_steps"].clamp(min=1), "diverging": tree.diverging,
        "energy": initial_energy, "lp": -tree.proposal.potential, "n_steps": stats["n_steps"],
        "tree_depth": stats["tree_depth"]}


def run_lockstep_nuts(space: FlatPotential, start: torch.Tensor, num_warmup: int, num_draws: int,
                      settings: NUTSSettings = NUTSSettings()) -> LockstepChains:
    """NUTS from ``start`` (C, d): ``num_warmup`` iterations adapting the step size and
    mass matrix across chains, then ``num_draws`` with the kernel fixed (module docstring)."""
    if start.dim() != 2 or start.shape[0] < 1:
        raise ValueError(f"NUTS needs flat starting points (C, d), got start of shape {tuple(start.shape)}")
    with pyro.validation_enabled(False):  # an invalid state is a non-finite energy: a divergence
        state, mass, step_size = begin_warmup(space, start, num_warmup)
        dual = DualAveraging(prox_center=math.log(10 * step_size))
        for t in range(1, num_warmup + 1):
            state, stats = nuts_transition(space, state, step_size, mass.inverse_mass, settings.max_tree_depth)
            dual.step(settings.target_acceptance - float(stats["acceptance_rate"].mean()))
            log_step, _ = dual.get_state()
            step_size = math.exp(log_step) if math.isfinite(log_step) else step_size
            if mass.update(t, state.x):
                step_size = initial_step_size(space, state, mass.inverse_mass)  # Stan re-initialises it
                dual = DualAveraging(prox_center=math.log(10 * step_size))
        if num_warmup:
            _, log_average = dual.get_state()
            step_size = math.exp(log_average) if math.isfinite(log_average) else step_size
        return _sample(space, state, num_draws, step_size, mass.inverse_mass, settings.max_tree_depth)


def run_fixed_nuts(space: FlatPotential, start: torch.Tensor, num_draws: int, step_size: float,
                   inverse_mass: torch.Tensor, max_tree_depth: int = NUTSSettings.max_tree_depth) -> LockstepChains:
    """``num_draws`` NUTS iterations with a fixed step size and diagonal inverse mass from
    ``start`` (C, d): a kernel that leaves the target invariant."""
    with pyro.validation_enabled(False):
        return _sample(space, start_chains(space, start), num_draws, step_size, inverse_mass, max_tree_depth)


def _sample(space: FlatPotential, state: Batch, num_draws: int, step_size: float, inverse_mass: torch.Tensor,
            max_tree_depth: int) -> LockstepChains:
    """``num_draws`` iterations of the fixed kernel, recording every state."""
    states, records = [], []
    for _ in range(num_draws):
        state, stats = nuts_transition(space, state, step_size, inverse_mass, max_tree_depth)
        states.append(state.x)
        records.append(stats)
    stacked = {name: torch.stack([record[name] for record in records]) for name in records[0]}
    stacked["step_size"] = torch.full_like(stacked["energy"], step_size)
    return LockstepChains(torch.stack(states), stacked, step_size, inverse_mass, int(stacked["diverging"].sum()),
                          {"step_size": step_size, "mean_leapfrog_steps": float(stacked["n_steps"].double().mean())})
