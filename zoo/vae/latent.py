"""Latent-space tools for the zoo's VAE, each writing one PNG (matplotlib, without pyplot).

- :func:`traversals`: decode a line along each latent dimension, the others held at 0.
- :func:`interpolation`: decode the straight line between the encodings of two inputs.
- :func:`latent_arithmetic`: add the difference of two groups' mean encodings to a third
  group's encodings ("mean(7) - mean(1) + each 4") and decode.
- :func:`prior_grid`: decode a grid over the prior (the encodings shown over it reveal
  the "holes": prior mass that no data point's encoding covers).
- :func:`linear_probe`: logistic regression on encoder means against labels; returns
  held-out accuracy.
- :func:`beta_comparison`: checkpoints trained with different beta side by side: their
  encodings over the prior (coloured by a known factor or the digit), and their traversals.

Image datasets (digits) are drawn as 8x8 images; the curve and swiss-roll decoders are
drawn as points in data space. ``python -m zoo.vae_tools plots --dataset digits`` writes
them all.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from zoo.vae.data import digits_split
from zoo.vae.model import VAE

__all__ = ["beta_comparison", "interpolation", "latent_arithmetic", "linear_probe", "prior_grid", "traversals"]


def _figure(rows: int = 1, cols: int = 1, *, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure and its axes drawn without pyplot: no global backend switch (which would stop
    inline plots in a Jupyter session that calls these tools) and nothing left to close."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, cols, squeeze=False)


def _is_image(model: VAE) -> bool:
    return model.spec.likelihood == "bernoulli"


def _decode(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Decoded means: pixel probabilities for images, the Gaussian mean otherwise."""
    _, decoder = model.networks()
    with torch.no_grad():
        out = decoder(z.to(torch.float64))
    return torch.sigmoid(out) if _is_image(model) else out


def _encode(model: VAE, data: Any) -> torch.Tensor:
    encoder, _ = model.networks()
    with torch.no_grad():
        return encoder(model.validate(data))[0]


def _image_grid(images: torch.Tensor, path: str | Path, title: str) -> Path:
    """images (rows, cols, 64) -> one PNG."""
    rows, cols = images.shape[:2]
    side = math.isqrt(images.shape[-1])
    figure, axes = _figure(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4))
    for r in range(rows):
        for c in range(cols):
            axes[r][c].imshow(images[r, c].reshape(side, side).numpy(), cmap="gray_r", vmin=0, vmax=1)
            axes[r][c].axis("off")
    figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path


def _points(model: VAE, lines: torch.Tensor, path: str | Path, title: str, labels: list[str]) -> Path:
    """lines (rows, steps, D) decoded means drawn in the first two data coordinates."""
    figure, ((axis,),) = _figure(figsize=(4, 4))
    background = model.simulate(500, seed=0).data
    axis.scatter(background[:, 0], background[:, 1], s=3, c="0.8", label="simulated data")
    for line, label in zip(lines, labels):
        axis.plot(line[:, 0], line[:, 1], ".-", label=label)
    axis.set_xlabel("x1")
    axis.set_ylabel("x2")
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)
    return _save(figure, path)


def traversals(model: VAE, path: str | Path, *, num_steps: int = 9, limit: float = 2.5) -> Path:
    """Decode z = t e_j for t in [-limit, limit], one row per latent dimension j."""
    d = model.spec.latent_dim
    steps = torch.linspace(-limit, limit, num_steps, dtype=torch.float64)
    z = torch.zeros(d, num_steps, d, dtype=torch.float64)
    for j in range(d):
        z[j, :, j] = steps
    decoded = _decode(model, z)
    title = f"vae/{model.dataset}: traversal of each latent dimension over [-{limit}, {limit}]"
    if _is_image(model):
        return _image_grid(decoded, path, title)
    return _points(model, decoded, path, title, [f"z{j + 1}" for j in range(d)])


def interpolation(model: VAE, first: Any, second: Any, path: str | Path, *, num_steps: int = 10) -> Path:
    """Decode (1 - t) mu(first) + t mu(second), t in [0, 1] (mu: the encoder mean)."""
    ends = _encode(model, torch.stack([torch.as_tensor(first), torch.as_tensor(second)]).to(torch.float64))
    t = torch.linspace(0, 1, num_steps, dtype=torch.float64)[:, None]
    decoded = _decode(model, (1 - t) * ends[0] + t * ends[1])[None]
    title = f"vae/{model.dataset}: interpolation between two encodings"
    if _is_image(model):
        return _image_grid(decoded, path, title)
    return _points(model, decoded, path, title, ["interpolation"])


def latent_arithmetic(model: VAE, images: Any, labels: Any, path: str | Path, *, source: int = 1, goal: int = 7,
                      apply_to: int = 4, num_examples: int = 6) -> Path:
    """Rows: ``num_examples`` images of digit ``apply_to``, their reconstructions, and the
    decoding of mu(x) + mean mu(goal) - mean mu(source)."""
    if not _is_image(model):
        raise ValueError(f"vae: latent_arithmetic needs labelled images (dataset='digits'), got {model.dataset!r}")
    x = model.validate(images)
    labels = torch.as_tensor(labels)
    codes = _encode(model, x)
    groups = {}
    for digit in (source, goal, apply_to):
        mask = labels == digit
        if not mask.any():
            raise ValueError(f"vae: latent_arithmetic found no images labelled {digit}; labels present: "
                             f"{sorted(set(labels.tolist()))}")
        groups[digit] = mask
    shift = codes[groups[goal]].mean(0) - codes[groups[source]].mean(0)
    chosen = codes[groups[apply_to]][:num_examples]
    rows = torch.stack([x[groups[apply_to]][:num_examples], _decode(model, chosen), _decode(model, chosen + shift)])
    title = f"{apply_to}s; reconstructions; + mean({goal}) - mean({source}) in latent space"
    return _image_grid(rows, path, title)


def prior_grid(model: VAE, path: str | Path, *, num_per_side: int = 12, limit: float = 2.5,
               data: Any | None = None) -> Path:
    """Decode a grid over [-limit, limit]^d (d <= 2); with ``data``, a second panel shows its
    encodings over the prior's contours: the holes are prior mass with no encodings."""
    d = model.spec.latent_dim
    if d > 2:
        raise ValueError(f"vae: prior_grid draws 1-D or 2-D latent spaces, this one has {d} dimensions")
    axis_values = torch.linspace(-limit, limit, num_per_side, dtype=torch.float64)
    if d == 1:
        decoded = _decode(model, axis_values[:, None])
        codes = _encode(model, data)[:, 0] if data is not None else None
        figure, ((left, right),) = _figure(1, 2, figsize=(8, 4))
        if _is_image(model):
            raise ValueError("vae: image decoders here have 2-D latents")
        left.plot(decoded[:, 0], decoded[:, 1], "o-")
        left.set_title("decoded prior grid (data space)", fontsize=9)
        grid = torch.linspace(-4, 4, 200, dtype=torch.float64)
        right.plot(grid, torch.distributions.Normal(0.0, 1.0).log_prob(grid).exp(), label="prior")
        if codes is not None:
            right.hist(codes.numpy(), bins=40, density=True, alpha=0.5, label="encodings")
        right.legend(fontsize=7)
        right.set_title("prior vs encodings (gaps = holes)", fontsize=9)
        return _save(figure, path)
    a, b = torch.meshgrid(axis_values, axis_values.flip(0), indexing="xy")
    z = torch.stack([a, b], dim=-1)  # rows: z2 from +limit down; columns: z1
    decoded = _decode(model, z)
    if _is_image(model):
        images_path = _image_grid(decoded, path, f"vae/{model.dataset}: decoded grid over [-{limit}, {limit}]^2")
        if data is None:
            return images_path
        figure, ((axis,),) = _figure(figsize=(4, 4))
        codes = _encode(model, data)
        axis.scatter(codes[:, 0], codes[:, 1], s=4)
        for radius in (1, 2, 3):
            circle = torch.linspace(0, 2 * math.pi, 100)
            axis.plot(radius * circle.cos(), radius * circle.sin(), "k:", lw=0.8)
        axis.set_title("encodings over the prior's 1-3 sd circles (holes: empty prior mass)", fontsize=8)
        _save(figure, Path(path).with_name(Path(path).stem + "_encodings.png"))
        return images_path
    lines = decoded  # (rows, cols, D): draw each row of the grid as a line in data space
    return _points(model, lines, path, f"vae/{model.dataset}: decoded prior grid rows", [""] * len(lines))


def linear_probe(model: VAE, path: str | Path | None = None, *, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression from encoder means to digit labels (fit on
    the training split, scored on the test split); optionally a scatter plot of the codes."""
    if not _is_image(model):
        raise ValueError(f"vae: linear_probe needs labelled images (dataset='digits'), got {model.dataset!r}")
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = digits_split("train")
    test_x, test_y = digits_split("test")
    train_codes, test_codes = _encode(model, train_x).numpy(), _encode(model, test_x).numpy()
    probe = LogisticRegression(max_iter=2000, random_state=seed).fit(train_codes, train_y.numpy())
    accuracy = float(probe.score(test_codes, test_y.numpy()))
    if path is not None:
        figure, ((axis,),) = _figure(figsize=(4.5, 4))
        points = axis.scatter(test_codes[:, 0], test_codes[:, 1], c=test_y.numpy(), cmap="tab10", s=8)
        figure.colorbar(points, ax=axis, label="digit")
        axis.set_title(f"test encodings; linear probe accuracy {accuracy:.2f}", fontsize=9)
        _save(figure, path)
    return accuracy


def _decoded_lines(model: VAE, axis: Any, decoded: torch.Tensor, labels: list[str], data: torch.Tensor) -> None:
    """Rows of decoded points (rows, steps, D) on one axis: a mosaic of images, one row each,
    or lines in the swiss roll's plane (x1, x3) over the data."""
    rows, steps = decoded.shape[:2]
    if _is_image(model):
        side = math.isqrt(decoded.shape[-1])
        mosaic = decoded.reshape(rows, steps, side, side).permute(0, 2, 1, 3).reshape(rows * side, steps * side)
        axis.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=1)
        axis.set_yticks([(r + 0.5) * side for r in range(rows)], labels)
        axis.set_xticks([])
        return
    axis.scatter(data[:, 0], data[:, 2], s=2, c="0.85")
    for row, label in zip(decoded, labels):
        axis.plot(row[:, 0], row[:, 2], ".-", label=label)
    axis.set_xlabel("x1")
    axis.set_ylabel("x3")
    axis.legend(fontsize=7)


def beta_comparison(dataset: str, path: str | Path, betas: tuple[float, ...] = (1.0, 4.0), *,
                    num_steps: int = 9, limit: float = 2.5) -> Path:
    """One column per beta checkpoint of ``dataset`` (``swiss_roll`` or ``digits``). Top: the
    encodings of held-out data over the prior's 1-3 sd circles (the holes: prior mass no
    encoding covers), coloured by the swiss roll's angle (a known factor) or by the digit.
    Middle: the traversal of each latent dimension over [-limit, limit], decoded. Bottom: the
    decoded straight line between the encodings of two held-out points. Digits are drawn as
    images; the swiss roll in its rolled-up plane (x1, x3), where a decoder that ignores z
    draws a single dot."""
    from zoo.vae.data import ground_truth
    from zoo.vae.disentanglement import swiss_roll_factors

    if dataset not in ("swiss_roll", "digits"):
        raise ValueError(f"vae: beta_comparison draws the 2-D latents of swiss_roll or digits, got {dataset!r}")
    figure, axes = _figure(3, len(betas), figsize=(4.2 * len(betas), 11))
    figure.set_layout_engine("constrained")  # colour bars and labels without overlaps
    steps = torch.linspace(-limit, limit, num_steps, dtype=torch.float64)
    for column, beta in enumerate(betas):
        model = VAE(dataset=dataset, beta=beta)
        if dataset == "digits":
            data, colour = digits_split("test")
            label = "digit"
        else:
            truth = ground_truth(dataset, 1000, seed=3)
            data, colour = truth.data, swiss_roll_factors(truth.true_latents["z"])[:, 0]
            label = "angle (a known factor)"
        codes = _encode(model, data)
        top = axes[0][column]
        points = top.scatter(codes[:, 0], codes[:, 1], c=colour.numpy(), s=4, cmap="viridis")
        circle = torch.linspace(0, 2 * math.pi, 100)
        for radius in (1, 2, 3):
            top.plot(radius * circle.cos(), radius * circle.sin(), "k:", lw=0.8)
        top.set_title(f"beta = {beta:g}: encodings over the prior", fontsize=9)
        figure.colorbar(points, ax=top, label=label)
        z = torch.zeros(2, num_steps, 2, dtype=torch.float64)
        for j in range(2):
            z[j, :, j] = steps
        _decoded_lines(model, axes[1][column], _decode(model, z), ["z1", "z2"], data)
        axes[1][column].set_title(f"beta = {beta:g}: traversal of each dimension over [-{limit}, {limit}]", fontsize=9)
        t = torch.linspace(0, 1, num_steps, dtype=torch.float64)[:, None]
        line = ((1 - t) * codes[0] + t * codes[1])[None]
        _decoded_lines(model, axes[2][column], _decode(model, line), ["x1 to x2"], data)
        axes[2][column].set_title(f"beta = {beta:g}: interpolation between the encodings of two points", fontsize=9)
    figure.suptitle(f"vae/{dataset}: the beta-VAE checkpoints side by side", fontsize=10)
    return _save(figure, path)
