"""Training of the single variable-rate model: `aecodec train --data DIR --out CKPT`.

Each step draws random crops (with flips) and a continuous quality per crop, and minimises
lambda(q) * 255^2 * MSE + bpp summed over the batch, so every quality is trained in every step.
Training state (weights, both optimizers, step, every RNG) is checkpointed next to the output as
CKPT.train.pt; `--resume` continues from it exactly. At the end the integer CDF tables are frozen
and the shipped checkpoint is written to CKPT (see aecodec.weights.save_shipped).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .image import IMAGE_SUFFIXES
from .model import AECModel
from .network import default_precision, lambda_for
from .quality import LEARNED_MAX, QUALITY_MIN


def load_images(folder: Path, min_side: int) -> list[torch.Tensor]:
    """All images of a folder as uint8 (3, H, W) tensors; images smaller than a crop are skipped."""
    from PIL import Image

    images = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
        if min(array.shape[:2]) >= min_side:
            images.append(torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous())
    if not images:
        raise SystemExit(f"error: no training images of at least {min_side}x{min_side} in {folder}")
    return images


def sample_batch(images, batch: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    crops = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        _, h, w = img.shape
        top = int(torch.randint(h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(w - crop + 1, (1,), generator=gen))
        patch = img[:, top : top + crop, left : left + crop]
        flips = torch.randint(2, (2,), generator=gen)
        if flips[0]:
            patch = patch.flip(2)
        if flips[1]:
            patch = patch.flip(1)
        crops.append(patch)
    return torch.stack(crops).float() / 255.0


def learning_rate(step: int, steps: int, base_lr: float, drop_at: float) -> float:
    """Constant, then one drop by 10x for the last (1 - drop_at) of the run, short warm-up first."""
    warmup = min(500, steps // 20)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * (0.1 if step >= drop_at * steps else 1.0)


def rd_loss(model, x: torch.Tensor, quality: torch.Tensor) -> dict:
    out = model(x, quality)
    num_pixels = x.shape[2] * x.shape[3]
    bits = sum(lik.log2().flatten(1).sum(1) for lik in out["likelihoods"].values())
    bpp = -bits / num_pixels
    mse = F.mse_loss(out["x_hat"], x, reduction="none").flatten(1).mean(1)
    loss = (lambda_for(quality) * 255**2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse}


@torch.no_grad()
def widen(small: AECModel, N: int, M: int, seed: int = 0) -> AECModel:
    """A wider AECModel(N, M) that computes what `small` does: a warm start (Net2Net-style).

    Old channels keep their weights; new channels get fresh incoming weights and zero weights into
    old channels, so they start as a side network that training blends in. New latent channels (y, z)
    start tiny, so they quantize to 0 and cost almost nothing until they learn something.
    """
    if N < small.N or M < small.M:
        raise SystemExit(f"error: can only widen, not shrink ({small.N}/{small.M} -> {N}/{M})")
    with torch.random.fork_rng():  # the new channels' draws leave the caller's (per-rank) RNG as it was
        torch.manual_seed(seed)
        big = AECModel(N, M)
        new_y_noise = torch.randn_like(big.g_s[0].weight[small.M :])
    n_old, m_old, rgb = torch.arange(small.N), torch.arange(small.M), torch.arange(3)
    hs_hidden = torch.arange(small.M * 3 // 2)
    hs_out = torch.cat([m_old, M + m_old])  # h_s ends in [scales | means], M each
    hs_new = torch.ones(2 * M, dtype=torch.bool)
    hs_new[hs_out] = False
    tiny = 1e-2
    big.g_a[6].weight[small.M :] *= tiny
    big.h_a[4].weight[small.N :] *= tiny
    big.h_s[4].weight[hs_new] *= tiny
    big.h_s[4].bias[hs_new] = 0

    def copy_conv(layer, old, out_map, in_map):
        if isinstance(layer, torch.nn.ConvTranspose2d):  # weight (in, out, k, k)
            layer.weight[:, out_map] = 0
            layer.weight[in_map[:, None], out_map] = old.weight
        else:  # weight (out, in, k, k)
            layer.weight[out_map] = 0
            layer.weight[out_map[:, None], in_map] = old.weight
        layer.bias[out_map] = old.bias

    for seq, old_seq, maps in (
        (big.g_a, small.g_a, [(n_old, rgb), (n_old, n_old), (n_old, n_old), (m_old, n_old)]),
        (big.g_s, small.g_s, [(n_old, m_old), (n_old, n_old), (n_old, n_old), (rgb, n_old)]),
        (big.h_a, small.h_a, [(n_old, m_old), (n_old, n_old), (n_old, n_old)]),
        (big.h_s, small.h_s, [(m_old, n_old), (hs_hidden, m_old), (hs_out, hs_hidden)]),
    ):
        convs = [i for i, layer in enumerate(seq) if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
        for i, (out_map, in_map) in zip(convs, maps, strict=True):
            copy_conv(seq[i], old_seq[i], out_map, in_map)
            if i + 1 < len(seq) and hasattr(seq[i + 1], "gamma"):  # GDN: the old block, no cross terms
                seq[i + 1].beta[out_map] = old_seq[i + 1].beta
                seq[i + 1].gamma[out_map[:, None], out_map] = old_seq[i + 1].gamma
    # g_s sees the new y channels through small random weights: y_hat is 0 there at first, so the
    # output is unchanged, but the gradient reaches those channels and lets them grow.
    new_y = big.g_s[0].weight[small.M :]
    new_y.copy_(tiny * small.g_s[0].weight.std() * new_y_noise)

    old_params = dict(small.entropy_bottleneck.named_parameters())
    source = torch.arange(N) % small.N  # new z channels start with an old channel's density
    for name, param in big.entropy_bottleneck.named_parameters():
        param.copy_(old_params[name][source])
    for table, old in ((big.log_gain, small.log_gain), (big.log_inv_gain, small.log_inv_gain)):
        table[:, : small.M] = old
        table[:, small.M :] = old.mean(1, keepdim=True)
    return big


def mean_psnr(mse: torch.Tensor) -> float:
    """The mean of each image's PSNR, from per-image MSEs of pixels in [0, 1]."""
    return (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()


def random_qualities(batch: int, gen: torch.Generator) -> torch.Tensor:
    return QUALITY_MIN + (LEARNED_MAX - QUALITY_MIN) * torch.rand(batch, generator=gen)


def trainable(model: AECModel) -> AECModel:
    """model, in training mode with gradients, its weights channels-last: with run_in's channels-last
    activations, bf16 steps ran ~1.3x faster (N=128/M=192, batch 4 of 256x256). Weights files are still
    written in the default layout (save_shipped)."""
    return model.train().requires_grad_(True).to(memory_format=torch.channels_last)


def optimizers(model: AECModel, lr: float) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for the network; a separate Adam for the entropy bottleneck's quantiles (the auxiliary loss)."""
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(main_params, lr=lr), torch.optim.Adam(aux_params, lr=1e-3)


def train_step(net, model: AECModel, optimizer, aux_optimizer, x: torch.Tensor, quality: torch.Tensor) -> dict:
    """One optimizer step on a batch; net is the model or its DDP wrapper."""
    stats = rd_loss(net, x, quality)
    optimizer.zero_grad(set_to_none=True)
    stats["loss"].backward()
    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 1.0)
    optimizer.step()
    aux_optimizer.zero_grad(set_to_none=True)
    model.aux_loss().backward()
    aux_optimizer.step()
    return stats


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun this joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def transform_dtype(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The transforms' autocast dtype for --precision; None (the default): bf16 where the device runs it
    faster, the rule decoding's default precision follows (bench.train_speed on an Intel Xeon with
    AVX512-BF16 but no AMX: bf16 ~0.85x float32's speed at the median; with AMX 2.1x; on Zen 4 1.8-2.5x)."""
    if precision is None:
        precision = "bf16" if default_precision(device) == "bf16" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def train(args: argparse.Namespace) -> None:
    from .weights import save_shipped

    out = Path(args.out)
    state_path = out.with_name(out.name + ".train.pt")
    if args.export:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model = AECModel(**state["config"])
        model.load_state_dict(state["model"])
        save_shipped(model, out)
        print(f"wrote {out} from step {state['step']} of {state_path}")
        return
    rank, world, device = _setup_distributed()
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed crop shapes: let cuDNN pick the fastest kernels
    if not args.data:
        raise SystemExit("error: --data is required to train")
    images = load_images(Path(args.data), args.crop)

    torch.manual_seed(args.seed + rank)
    gen = torch.Generator().manual_seed(args.seed + rank)
    if args.init_from and not (args.resume and state_path.exists()):
        model = widen(AECModel.from_weights(args.init_from), args.N, args.M, seed=args.seed).to(device)
        if rank == 0:
            print(f"initialised from {args.init_from}, widened to N={args.N}, M={args.M}")
    else:
        model = AECModel(args.N, args.M).to(device)
    trainable(model)
    model.transform_dtype = transform_dtype(args.precision, device)
    optimizer, aux_optimizer = optimizers(model, args.lr)
    step = 0

    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["config"] != model.config:
            raise SystemExit(f"error: {state_path} holds a model {state['config']}, not {model.config}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:  # e.g. a state from before the quality range changed (other gain rows)
            raise SystemExit(f"error: {state_path} does not fit this version's model: {exc}") from None
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        step = state["step"]
        _set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"], gen)
        if rank == 0:
            print(f"resumed {state_path} at step {step}")

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    settings = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}

    def save_state() -> None:
        rng = _rng_state(gen)
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        if rank == 0:
            tmp = state_path.with_name(state_path.name + ".tmp")
            torch.save(
                {"config": model.config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "aux_optimizer": aux_optimizer.state_dict(), "step": step, "rng": rng, "args": settings},
                tmp,
            )
            os.replace(tmp, state_path)

    bar = tqdm(total=args.steps, initial=step, disable=rank != 0, dynamic_ncols=True, mininterval=5)
    ema = None
    started = time.time()
    deadline = None if args.minutes is None else started + 60 * args.minutes
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.lr_drop)
        x = sample_batch(images, args.batch, args.crop, gen).to(device)
        quality = random_qualities(args.batch, gen).to(device)
        stats = train_step(net, model, optimizer, aux_optimizer, x, quality)
        step += 1

        now = {"loss": stats["loss"].item(), "bpp": stats["bpp"].item(), "psnr": mean_psnr(stats["mse"].detach())}
        ema = now if ema is None else {k: 0.98 * ema[k] + 0.02 * v for k, v in now.items()}
        bar.set_postfix(loss=f"{ema['loss']:.3f}", bpp=f"{ema['bpp']:.3f}", psnr=f"{ema['psnr']:.2f}", refresh=False)
        bar.update()
        if not math.isfinite(now["loss"]):
            raise SystemExit(f"error: loss is {now['loss']} at step {step}; resume from the last checkpoint with a lower --lr")
        out_of_time = deadline is not None and time.time() >= deadline
        if world > 1 and deadline is not None:  # every rank stops at the same step: rank 0's clock decides
            flag = torch.tensor([float(out_of_time)], device=device)
            torch.distributed.broadcast(flag, 0)
            out_of_time = bool(flag.item())
        if step % args.checkpoint_every == 0 or step == args.steps or out_of_time:
            save_state()
            if rank == 0 and args.log:
                with open(args.log, "a") as log:
                    log.write(f"{step}\t{time.time() - started:.0f}\t{ema['loss']:.4f}\t{ema['bpp']:.4f}\t{ema['psnr']:.3f}\n")
        if out_of_time:
            break
    bar.close()
    if rank == 0:
        save_shipped(model.cpu(), out)
        print(f"wrote {out}")
    if world > 1:
        torch.distributed.destroy_process_group()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="folder of training images (never the test set)")
    parser.add_argument("--out", required=True, help="shipped checkpoint to write; training state goes to OUT.train.pt")
    parser.add_argument("--steps", type=int, default=20000, help="total optimizer steps (default 20000)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.train.pt if it exists")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-drop", type=float, default=0.85, help="fraction of --steps after which lr drops 10x")
    parser.add_argument("--N", type=int, default=64, help="transform channels")
    parser.add_argument("--M", type=int, default=128, help="latent channels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", help="start (when there is no state to resume) from these weights, a shipped "
                        "model's name or a file, widened to --N/--M")
    parser.add_argument("--precision", choices=["bf16", "fp32"],
                        help="the transforms' training precision: bf16 autocast (entropy models and loss stay "
                             "float32) or fp32; default: bf16 where this device runs it faster (as decoding's "
                             "default), else fp32")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--minutes", type=float, help="stop after this much training time (state and weights "
                        "are written as at the last step): for a machine lent for a fixed time")
    parser.add_argument("--export", action="store_true", help="only write OUT from the weights in OUT.train.pt")
    parser.add_argument("--log", help="append step/seconds/loss/bpp/psnr lines to this file at each checkpoint")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="aecodec train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
