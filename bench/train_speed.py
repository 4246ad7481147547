"""Training speed and RD of float32 vs bf16-autocast transforms, side by side in one run.

    python -m bench.train_speed --data ../shared/data/train [--N 128 --M 192 --batch 4 --crop 256]
        [--steps 20 --rounds 3] [--rd-steps 300 --init-from aec-hp64]

Speed: rounds of `--steps` timed steps per precision, interleaved (this machine is noisy), from the
same weights and batches; prints ms/step, steps/hour and the bf16/float32 speed-up (fastest round).
RD (--rd-steps): two copies of the same start train the same batches for that many steps, one per
precision, then both are scored in float32 on held-out crops (the RD loss per quality): the faster
path must not lose RD at equal steps.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from aecodec.model import AECModel
from aecodec.train import load_images, optimizers, random_qualities, sample_batch, train_step, trainable, widen
from bench import checkpoint

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def start_model(args) -> AECModel:
    torch.manual_seed(args.seed)
    if args.init_from:
        return widen(AECModel.from_weights(args.init_from), args.N, args.M, seed=args.seed)
    return AECModel(args.N, args.M)


def batches(images, count: int, args, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(sample_batch(images, args.batch, args.crop, gen), random_qualities(args.batch, gen)) for _ in range(count)]


def trainer(model: AECModel, precision: str, lr: float):
    trainable(model)
    model.transform_dtype = PRECISIONS[precision]
    optimizer, aux_optimizer = optimizers(model, lr)
    return lambda x, q: train_step(model, model, optimizer, aux_optimizer, x, q)


@torch.no_grad()
def score(model: AECModel, held_out: torch.Tensor) -> dict[float, float]:
    """Float32 RD loss on held-out crops at a few qualities."""
    saved, model.transform_dtype = model.transform_dtype, None
    result = {q: s["loss"] for q, s in checkpoint.score(model, held_out, [2.0, 5.0, 8.0, 10.0]).items()}
    model.transform_dtype = saved
    model.train()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--M", type=int, default=192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and precision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rd-steps", type=int, default=0, help="also train each precision this many steps and score")
    parser.add_argument("--init-from", help="start from these weights, widened to --N/--M (default: random init)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    images = load_images(Path(args.data), args.crop)
    base = start_model(args)
    models = {p: copy.deepcopy(base) for p in PRECISIONS}
    steppers = {p: trainer(models[p], p, args.lr) for p in PRECISIONS}
    work = batches(images, args.steps, args, args.seed)
    for p in PRECISIONS:  # warm-up: allocator, oneDNN kernels
        steppers[p](*work[0])
    times = {p: [] for p in PRECISIONS}
    for _ in range(args.rounds):
        for p in PRECISIONS:
            start = time.perf_counter()
            for x, q in work:
                steppers[p](x, q)
            times[p].append((time.perf_counter() - start) / len(work))
    print(f"N={args.N} M={args.M}, batch {args.batch} of {args.crop}x{args.crop}, {torch.get_num_threads()} threads")
    for p in PRECISIONS:
        best = min(times[p])
        print(f"  {p}: {1000 * best:.0f} ms/step (rounds: {', '.join(f'{1000 * t:.0f}' for t in times[p])}), "
              f"{3600 / best:,.0f} steps/h")
    print(f"  bf16 / fp32 speed-up: {min(times['fp32']) / min(times['bf16']):.2f}x (fastest rounds)")

    if args.rd_steps:
        models = {p: copy.deepcopy(base) for p in PRECISIONS}
        steppers = {p: trainer(models[p], p, args.lr) for p in PRECISIONS}
        held_out = torch.cat([x for x, _ in batches(images, 4, args, args.seed + 1)])
        print(f"RD after {args.rd_steps} steps on the same batches (float32 RD loss on {len(held_out)} held-out crops):")
        print(f"  start: {score(base, held_out)}")
        for x, q in batches(images, args.rd_steps, args, args.seed + 2):
            for p in PRECISIONS:
                steppers[p](x, q)
        scores = {p: score(models[p], held_out) for p in PRECISIONS}
        for p in PRECISIONS:
            print(f"  {p}: " + ", ".join(f"q{q:g} {v:.4f}" for q, v in scores[p].items()))
        print("  bf16 / fp32 loss: " + ", ".join(f"q{q:g} {scores['bf16'][q] / scores['fp32'][q]:.4f}" for q in scores["fp32"]))


if __name__ == "__main__":
    main()
