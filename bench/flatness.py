"""Local flatness F(gamma) = E_d[L(w + gamma d) - L(w)] (SWAD's test), ERM vs QT-DoG.

``d`` is a random direction of unit norm over the whole parameter vector;
``L`` the cross-entropy on source-domain training images (no augmentation).
A QT-DoG model is perturbed as it is deployed: its dequantized weights
(learned integers x scales) as a float network, so both arms are measured
on the weights they actually run.

    python bench/flatness.py runs/pacs-sketch-erm-s0 runs/pacs-sketch-qtdog-eoq5 \\
        --out bench/results/flatness.json --plot docs/plots/flatness.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from qtdog_train.config import TrainConfig
from qtdog_train.convert.fold import dequantized_copy
from qtdog_train.pipeline import calibration_batches, load_run_data
from qtdog_train.quant.lsq import is_quantized
from qtdog_train.trainer import load_selected_model


def selected_model(run: Path, member: int = 0) -> tuple[TrainConfig, torch.nn.Module]:
    """The selected model as deployed: a QT-DoG model as its dequantized float network."""
    cfg, model = load_selected_model(run, member)
    if is_quantized(model):
        model, _ = dequantized_copy(model, cfg.bits)
    return cfg, model


@torch.no_grad()
def loss_of(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    total = n = 0.0
    for x, y in batches:
        total += float(F.cross_entropy(model(x), y, reduction="sum"))
        n += len(y)
    return total / n


@torch.no_grad()
def flatness(
    model: torch.nn.Module, batches, gammas: list[float], directions: int, seed: int
) -> list[float]:
    params = [p for p in model.parameters()]
    base = [p.detach().clone() for p in params]
    l0 = loss_of(model, batches)
    generator = torch.Generator().manual_seed(seed)
    curves = []
    for _ in range(directions):
        d = [torch.randn(p.shape, generator=generator) for p in params]
        norm = torch.sqrt(sum((v**2).sum() for v in d))
        curve = []
        for gamma in gammas:
            for p, b, v in zip(params, base, d, strict=True):
                p.copy_(b + gamma * v / norm)
            curve.append(loss_of(model, batches) - l0)
        curves.append(curve)
    for p, b in zip(params, base, strict=True):
        p.copy_(b)
    return [sum(c[i] for c in curves) / directions for i in range(len(gammas))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument(
        "--gammas", type=float, nargs="+", default=[float(g) for g in range(0, 65, 5)]
    )
    parser.add_argument("--directions", type=int, default=3)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    results = {}
    data_cache = {}
    for run in args.runs:
        cfg, model = selected_model(run)
        key = (cfg.data, tuple(cfg.test_domains), cfg.image_size, cfg.trial_seed)
        if key not in data_cache:
            data = load_run_data(cfg, torch.device("cpu"))
            xs = calibration_batches(data, args.images, seed=123)
            ys = []
            generator = torch.Generator().manual_seed(123)
            per_domain = max(1, args.images // len(data.source_domains))
            for domain in data.source_domains:
                index = torch.randperm(len(data.train[domain]), generator=generator)[:per_domain]
                ys.append(data.train[domain].labels[index])
            labels = torch.cat(ys)
            data_cache[key] = [(x, labels[i * 64 : i * 64 + len(x)]) for i, x in enumerate(xs)]
        curve = flatness(model, data_cache[key], args.gammas, args.directions, seed=0)
        variant = " (official)" if cfg.official_compat else ""
        if cfg.algorithm == "qtdog":
            variant += f" {cfg.bits}-bit" + (f", s-lr {cfg.s_lr:g}" if cfg.s_lr else "")
            variant += ", s learned as s" if cfg.s_param == "linear" else ""
        name = f"{cfg.algorithm}{variant} [{run}]"  # the full path: sweep runs share a folder name
        results[name] = {"gammas": args.gammas, "loss_increase": curve}
        print(
            name,
            " ".join(f"{g:g}:{v:.3f}" for g, v in zip(args.gammas, curve, strict=True)),
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.4))
        for name, r in results.items():
            ax.plot(r["gammas"], r["loss_increase"], marker="o", label=name)
        ax.set_xlabel("gamma (distance along a random unit direction)")
        ax.set_ylabel("loss increase")
        ax.set_title("Local flatness F(gamma), lower is flatter")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
