"""The VAE's command line: train a checkpoint, print the inference gaps, draw the latent plots,
measure disentanglement.

    python -m zoo.vae_tools train --dataset curve [--beta 4]   # writes zoo/checkpoints/vae-curve[-beta4].pt
    python -m zoo.vae_tools gaps --dataset curve [--beta 4]    # approximation and amortisation gaps
    python -m zoo.vae_tools plots --dataset digits [--beta 4] --out plots/
    python -m zoo.vae_tools disentanglement --out plots/      # every swiss-roll beta: MIG, |corr|, probe R^2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.vae.data import digits_split
from zoo.vae.gaps import inference_gaps
from zoo.vae.disentanglement import FACTORS, disentanglement
from zoo.vae.latent import beta_comparison, interpolation, latent_arithmetic, linear_probe, prior_grid, traversals
from zoo.vae.model import VAE
from zoo.vae.networks import SPECS
from zoo.vae.training import checkpoint_path, save_checkpoint, train

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.vae_tools", description="Train a zoo VAE or draw its plots.")
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train", help="train and store a checkpoint (about a minute)")
    training.add_argument("--dataset", default="curve", choices=sorted(SPECS))
    training.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    training.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (beta-VAE; 1: the plain VAE)")
    training.add_argument("--num-particles", type=int, default=8)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--out", default=None, help="checkpoint path (default: the shipped one)")
    plots = commands.add_parser("plots", help="write every latent-space plot")
    plots.add_argument("--dataset", default="digits", choices=sorted(SPECS))
    plots.add_argument("--beta", type=float, default=1.0)
    plots.add_argument("--out", default="plots")
    measures = commands.add_parser("disentanglement", help="MIG, |correlation| and probe R^2 of each swiss-roll beta, "
                                                           "and the checkpoints' latent spaces side by side")
    measures.add_argument("--betas", default="1,4", help="comma-separated betas with shipped checkpoints")
    measures.add_argument("--out", default="plots")
    gap_parser = commands.add_parser("gaps", help="print the inference-gap decomposition (Cremer et al. 2018)")
    gap_parser.add_argument("--dataset", default="curve", choices=sorted(SPECS))
    gap_parser.add_argument("--beta", type=float, default=1.0)
    gap_parser.add_argument("--num-datapoints", type=int, default=150, help="held-out points to average over")
    args = parser.parse_args()
    if args.command == "disentanglement":
        _disentanglement(tuple(float(b) for b in args.betas.split(",")), Path(args.out))
        return
    if args.command == "gaps":
        model = VAE(dataset=args.dataset, beta=args.beta)
        gaps = inference_gaps(model, model.load_dataset(args.dataset)[: args.num_datapoints])
        print(f"vae/{args.dataset} beta={args.beta:g}, {args.num_datapoints} held-out points, nats per point (± se):\n"
              f"  log p(x)                 {gaps.log_evidence:.4f}\n"
              f"  ELBO, best Gaussian      {gaps.elbo_optimal:.4f}\n"
              f"  ELBO, encoder            {gaps.elbo_amortised:.4f}\n"
              f"  approximation gap        {gaps.approximation_gap:.4f} ± {gaps.approximation_gap_se:.4f}\n"
              f"  amortisation gap         {gaps.amortisation_gap:.4f} ± {gaps.amortisation_gap_se:.4f}")
        return
    if args.command == "train":
        command = (f"python -m zoo.vae_tools train --dataset {args.dataset} --objective {args.objective} "
                   f"--beta {args.beta:g} --num-particles {args.num_particles} --seed {args.seed}")
        encoder, decoder, record = train(args.dataset, objective=args.objective, beta=args.beta,
                                         num_particles=args.num_particles, seed=args.seed)
        path = Path(args.out) if args.out else checkpoint_path(args.dataset, args.beta)
        save_checkpoint(encoder, decoder, record, path, command)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB) in {record['train_seconds']} s; "
              f"final loss per point {record['losses_every_100_steps'][-1]:.4f}")
        return
    model = VAE(dataset=args.dataset, beta=args.beta)
    out = Path(args.out)
    stem = f"vae-{args.dataset}" + ("" if args.beta == 1 else f"-beta{args.beta:g}")
    data = model.load_dataset(args.dataset)
    print(traversals(model, out / f"{stem}-traversals.png"))
    print(interpolation(model, data[0], data[1], out / f"{stem}-interpolation.png"))
    print(prior_grid(model, out / f"{stem}-prior-grid.png", data=data))
    if args.dataset == "digits":
        images, labels = digits_split("test")
        print(latent_arithmetic(model, images, labels, out / f"{stem}-arithmetic.png"))
        print(f"linear probe accuracy: {linear_probe(model, out / f'{stem}-probe.png'):.3f}")


def _disentanglement(betas: tuple[float, ...], out: Path) -> None:
    print(f"swiss roll, factors {', '.join(FACTORS)}; codes: encoder means of 2,000 held-out draws "
          f"(± bootstrap standard errors over the draws)")
    for beta in betas:
        measures = disentanglement(VAE(dataset="swiss_roll", beta=beta))
        active = ", ".join(f"z{j + 1}" for j in measures.active.nonzero().flatten().tolist()) or "none (collapsed)"
        print(f"  beta={beta:g}: active units {active} (Var mu {[round(v, 4) for v in measures.activity.tolist()]}); "
              f"MIG {measures.mig:.3f} ± {measures.mig_se:.3f} (per factor "
              f"{', '.join(f'{g:.3f}' for g in measures.mig_per_factor)}); probe R^2 "
              f"{', '.join(f'{r:.3f} ± {e:.3f}' for r, e in zip(measures.probe_r2, measures.probe_r2_se))}; "
              f"|corr| rows z1, z2: "
              f"{[[round(v, 3) for v in row] for row in measures.correlation.tolist()]}")
    for dataset in ("swiss_roll", "digits"):
        print(beta_comparison(dataset, out / f"vae-{dataset}-betas.png", betas))


if __name__ == "__main__":
    main()
