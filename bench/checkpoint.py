"""How a model in training stands against a released one: RD loss on the same centre crops, side by side.

    python -m bench.checkpoint --images path/to/kodak runs/aec128.pt.train.pt [more states or weights files]
        [--against aec-hp64] [--limit 4 --crop 256 --qualities 2,6,10]

Each model runs a float32 forward pass (noise-free rounding, as in training's held-out scoring) on centre
crops of the first --limit images; prints the RD loss, bpp and PSNR per quality and the loss relative to
--against, then each model's ceiling: the PSNR of g_s(g_a(x)) with the latents left unrounded, a measure
of how well the transforms reconstruct at all (an indication, not a bound: g_s never saw unrounded latents
in training). A quick check between Kodak BD-rate runs (bench.rd), which need exported weights. To judge a
run at a high learning rate, anneal a copy of its state first (README, "The next model").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aecodec.model import AECModel
from aecodec.train import load_images, mean_psnr, rd_loss


def centre_crops(folder: Path, limit: int, crop: int) -> torch.Tensor:
    crops = []
    for img in load_images(folder, crop)[:limit]:
        _, h, w = img.shape
        top, left = (h - crop) // 2, (w - crop) // 2
        crops.append(img[:, top : top + crop, left : left + crop].float() / 255)
    return torch.stack(crops)


def load(path_or_name: str) -> tuple[AECModel, str]:
    """A training state (OUT.train.pt), a weights file or a released model's name -> (model, label)."""
    path = Path(path_or_name)
    if path.name.endswith(".train.pt"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = AECModel(**state["config"])
        model.load_state_dict(state["model"])
        return model, f"{path.name} step {state['step']}"
    return AECModel.from_weights(path_or_name), path.name


@torch.no_grad()
def score(model: AECModel, x: torch.Tensor, qualities: list[float]) -> dict[float, dict]:
    model.eval()
    features = model.analysis_features(x)  # g_a's output, the same at every quality
    result = {}
    for q in qualities:
        quality = torch.full((len(x),), q)
        stats = rd_loss(model, x, quality)
        # Unclamped, as rd_loss's x_hat, so the ceiling and the PSNR differ by the rounding alone.
        unrounded = model.synthesis(model.latents_at(features, quality)[0], quality)
        result[q] = {"loss": stats["loss"].item(), "bpp": stats["bpp"].item(), "psnr": mean_psnr(stats["mse"]),
                     "ceiling": mean_psnr(((unrounded - x) ** 2).mean(dim=(1, 2, 3)))}
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="training states, weights files or released model names")
    parser.add_argument("--images", required=True)
    parser.add_argument("--against", default="aec-hp64")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--qualities", default="2,6,10")
    args = parser.parse_args(argv)
    x = centre_crops(Path(args.images), args.limit, args.crop)
    qualities = [float(q) for q in args.qualities.split(",")]
    reference = score(load(args.against)[0], x, qualities)
    results = {}
    print("| model | " + " | ".join(f"q{q:g} loss, bpp, PSNR" for q in qualities) + " |")
    print("|---|" + "---|" * len(qualities))
    for name in [args.against, *args.models]:
        model, label = load(name)
        results[label] = scores = score(model, x, qualities) if name != args.against else reference
        print(f"| {label} | " + " | ".join(
            f"{s['loss']:.3f} ({100 * (s['loss'] / reference[q]['loss'] - 1):+.1f} %), {s['bpp']:.3f}, {s['psnr']:.2f}"
            for q, s in scores.items()) + " |")
    print("\nceiling (PSNR with unrounded latents): " + "; ".join(
        f"{label} " + ", ".join(f"q{q:g} {s['ceiling']:.2f}" for q, s in by_quality.items())
        for label, by_quality in results.items()))
    return results


if __name__ == "__main__":
    main()
