"""Encoder effort: optimize one image's latents for its real rate-distortion cost; the decoder is untouched.

g_a only predicts good latents (the "amortization gap"). At effort > 0, y and z start from g_a's guess and
Adam minimizes the model's own training loss, lambda(q) * 255^2 * MSE + bpp, for this image, with an
annealed soft rounding in place of rounding: SGA's relaxation (stochastic Gumbel annealing, Yang, Bamler
and Mandt, NeurIPS 2020) without its Gumbel noise, the softmax-weighted mix of floor and ceil whose
temperature falls towards hard rounding. With the few steps an encoder can afford, the noise-free form
lowered the real loss 3x as much as SGA's draws (10 steps on Kodak crops: -3.4 % against -1.1 %), and
plain straight-through rounding gained nothing. The optimized latents then take the ordinary encoder path
(z rounded, integer hyper-synthesis, y rounded around its means), so the file is an ordinary .aec.
"""

from __future__ import annotations

import math
import numbers
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .errors import OptionError
from .network import TILE, TILE_MARGIN, Y_STRIDE, lambda_for, tiled

EFFORT_MAX = 3
# The rate search assumes effort saves less than this fraction of effort 0's bytes at a quality
# (Kodak crops: 1-10 %).
EFFORT_MAX_SAVING = 0.3


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    hold: float = 0.35  # fraction of the steps at the start temperature before it decays
    tau_start: float = 1.0
    tau_end: float = 0.2  # lower ends (0.1, 0.05) turned the last steps into flips that cost more than they gained

    def temperature(self, step: int) -> float:
        start = self.hold * self.steps
        if step < start:
            return self.tau_start
        progress = (step - start) / max(1.0, self.steps - 1 - start)
        return self.tau_start * (self.tau_end / self.tau_start) ** progress

    def learning_rate(self, step: int) -> float:
        """Cosine decay towards a tenth: as the temperature falls the gradients grow faster than Adam's
        second moment follows, and at a constant rate long runs undid their gains (25 steps: -4.2 % loss
        at best, +2.9 % at the end)."""
        return self.lr * (0.55 + 0.45 * math.cos(math.pi * step / self.steps))


# Effort level -> schedule, chosen by measurement (bench.rd --effort; README "Encoder effort").
SCHEDULES = {1: Schedule(steps=3, lr=4e-2), 2: Schedule(steps=12, lr=4e-2), 3: Schedule(steps=40, lr=2e-2)}


def check_effort(effort) -> int:
    if isinstance(effort, bool) or not isinstance(effort, numbers.Integral) or not 0 <= effort <= EFFORT_MAX:
        raise OptionError(f"effort must be an integer in [0, {EFFORT_MAX}], got {effort!r}")
    return int(effort)


def soft_round(values: Tensor, tau: float) -> Tensor:
    """floor + the weight of ceil in a softmax between floor and ceil at temperature tau.

    The nearer a value is to one of them, the more weight it gets (logits -atanh(distance) / tau, as in
    SGA); as tau falls the mix becomes hard rounding, yet the gradient still reaches the value."""
    low = values.detach().floor()
    frac = (values - low).clamp(1e-5, 1 - 1e-5)
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)], dim=-1) / tau
    return low + torch.softmax(logits / tau, dim=-1)[..., 1]


_TRAINING_MODELS = weakref.WeakKeyDictionary()  # coding Network -> its AECModel, made once per network


def training_model(net, device: torch.device):
    """compressai's AECModel holding `net`'s weights, frozen: the coding Network keeps the density models
    that give the rate its gradient only as buffers. Its transforms compute what the Network's do."""
    model = _TRAINING_MODELS.get(net)
    if model is None:
        try:
            from .model import AECModel
        except ImportError as exc:  # compressai comes with the train extra; coding at effort 0 needs none
            raise OptionError(f"effort > 0 needs compressai (pip install 'aecodec[train]'): {exc}") from exc
        model = AECModel(**net.config)
        model.load_state_dict({key: value.cpu() for key, value in net.state_dict().items()})
        model = _TRAINING_MODELS[net] = model.eval().requires_grad_(False)
    return model.to(device)


def _z_likelihood(entropy_bottleneck, z: Tensor) -> Tensor:
    """The entropy bottleneck's likelihood of z as it is (compressai's forward would round or add noise)."""
    values = z.transpose(0, 1).reshape(z.shape[1], 1, -1)
    likelihood, _, _ = entropy_bottleneck._likelihood(values)
    return entropy_bottleneck.likelihood_lower_bound(likelihood)


def _synthesis(net, y_tilde: Tensor, inv_gain: Tensor) -> Tensor:
    """g_s on tiles for big images, each checkpointed, so the backward pass holds one tile's activations."""
    y = y_tilde * inv_gain
    small = max(y.shape[-2:]) * Y_STRIDE <= TILE
    transform = net.g_s if small else (lambda t: checkpoint(net.g_s, t, use_reentrant=False))
    return tiled(transform, y, TILE // Y_STRIDE, TILE_MARGIN // Y_STRIDE, up=Y_STRIDE)


def optimize_latents(net, x: Tensor, y: Tensor, z: Tensor, quality: Tensor, effort: int, height: int, width: int,
                     progress: bool = False) -> tuple[Tensor, Tensor]:
    """(y, z) from g_a for the padded image x -> latents with a lower RD loss on x[..., :height, :width].

    Only the latents get gradients (the model's weights do not require any); runs on x's device."""
    schedule = SCHEDULES[effort]
    net = training_model(net, x.device)
    _, inv_gain = net.gains(quality)
    lam = float(lambda_for(quality.cpu())[0]) * 255**2
    pixels = height * width
    target = x[..., :height, :width]
    medians = net.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
    gc = net.gaussian_conditional
    steps = range(schedule.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"effort {effort}, quality {float(quality[0]):g}", unit="step", leave=False)
    with torch.enable_grad():
        y = y.detach().clone().requires_grad_(True)
        z = z.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([y, z], lr=schedule.lr)
        for step in steps:
            tau = schedule.temperature(step)
            optimizer.param_groups[0]["lr"] = schedule.learning_rate(step)
            z_tilde = medians + soft_round(z - medians, tau)
            scales, means = net.hyper_synthesis(z_tilde)
            y_tilde = means + soft_round(y - means, tau)
            y_likelihood = gc.likelihood_lower_bound(gc._likelihood(y_tilde, scales, means))
            bits = -(y_likelihood.log2().sum() + _z_likelihood(net.entropy_bottleneck, z_tilde).log2().sum())
            x_hat = _synthesis(net, y_tilde, inv_gain)[..., :height, :width]
            loss = lam * torch.mean((x_hat - target) ** 2) + bits / pixels
            if not math.isfinite(loss.item()):
                raise FloatingPointError("latent optimization diverged")  # a bug, never a silently bad file
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return y.detach(), z.detach()
