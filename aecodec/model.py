"""The network: a mean-scale hyperprior (Minnen et al. 2018) with gain units for variable rate.

The transforms and entropy models are compressai's; what is ours is the rate control. One model covers
every quality through gain units (Cui et al., CVPR 2021): a per-channel gain vector scales the latent
before quantization (a larger gain means finer quantization, more bits) and an inverse gain undoes it
before synthesis. One learned pair per anchor quality; in between, gains are interpolated
log-linearly, and training samples qualities continuously so the interpolation is trained too.

    x -> g_a -> *gain(q) -> y -> h_a -> z -> Q -> z_hat -> h_s -> (scales, means)
    y -> Q (around means) -> y_hat -> *inv_gain(q) -> g_s -> x_hat
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

with warnings.catch_warnings():  # compressai's import-time torch.jit.script calls warn on every CLI run
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    from compressai.models import MeanScaleHyperprior
    from compressai.ops import quantize_ste

from .quality import LAMBDAS, QUALITY_MIN

# Total downsampling of g_a (16) times h_a (4): image sides are padded to a multiple of this.
STRIDE = 64
Y_STRIDE = 16  # downsampling of g_a alone

# Large images run g_a and g_s on overlapping tiles so memory stays bounded (a 24 MP image untiled
# needs > 4 GB for g_s's full-resolution activations). Each tile sees TILE_MARGIN pixels of real
# context on every side, more than the transforms' reach (~30 px for g_a, 2 latent rows for g_s),
# so the stitched result equals the untiled one up to float rounding.
TILE = 1024
TILE_MARGIN = 64


def tiled(transform, x: Tensor, tile: int, margin: int, up: int = 1, down: int = 1) -> Tensor:
    """transform(x) for a translation-equivariant transform that scales sides by up/down, computed on
    tiles of `tile` input pixels with `margin` pixels of context each side (both multiples of `down`)."""
    batch, _, height, width = x.shape
    if height <= tile and width <= tile:
        return transform(x)

    def scaled(v: int) -> int:
        return v * up // down

    out = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(height, top + tile), min(width, left + tile)
            ctx_top, ctx_left = max(0, top - margin), max(0, left - margin)
            piece = transform(x[:, :, ctx_top : min(height, bottom + margin), ctx_left : min(width, right + margin)])
            if out is None:
                out = piece.new_empty(batch, piece.shape[1], scaled(height), scaled(width))
            out[:, :, scaled(top) : scaled(bottom), scaled(left) : scaled(right)] = piece[
                :, :, scaled(top - ctx_top) : scaled(bottom - ctx_top), scaled(left - ctx_left) : scaled(right - ctx_left)
            ]
    return out


def _interpolate_anchors(table: Tensor, quality: Tensor) -> Tensor:
    """Linear interpolation of rows of `table` (K, ...) at fractional anchor positions quality-1."""
    pos = (quality.to(table.dtype) - QUALITY_MIN).clamp(0, table.shape[0] - 1)
    lo = pos.floor().long().clamp(max=table.shape[0] - 2)
    t = (pos - lo.to(pos.dtype)).view(-1, *([1] * (table.dim() - 1)))
    return table[lo] * (1 - t) + table[lo + 1] * t


def lambda_for(quality: Tensor) -> Tensor:
    """Rate-distortion trade-off for each quality: log-linear between the anchor lambdas."""
    log_lambdas = torch.tensor(LAMBDAS, dtype=torch.float64).log()
    return _interpolate_anchors(log_lambdas, quality.double().cpu()).exp().to(quality.device)


class AECModel(MeanScaleHyperprior):
    """compressai's MeanScaleHyperprior(N, M) plus gain units; forward() takes a quality per image."""

    def __init__(self, N: int = 64, M: int = 128):
        super().__init__(N=N, M=M)
        # Training may run the transforms (not the entropy models) under bf16 autocast; None: float32.
        self.transform_dtype: torch.dtype | None = None
        # Gain ~ 1/quantization step, D ~ step^2 and lambda ~ 1/D: start the gains at sqrt(lambda).
        log_lambdas = torch.tensor(LAMBDAS, dtype=torch.float32).log()
        init = 0.5 * (log_lambdas - log_lambdas.mean())
        self.log_gain = nn.Parameter(init[:, None].repeat(1, M))
        self.log_inv_gain = nn.Parameter(-init[:, None].repeat(1, M))

    @property
    def config(self) -> dict:
        return {"N": self.N, "M": self.M}

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor]:
        """(gain, inverse gain), each (B, M, 1, 1), for a batch of qualities (B,)."""
        gain = _interpolate_anchors(self.log_gain, quality).exp()
        inv_gain = _interpolate_anchors(self.log_inv_gain, quality).exp()
        return gain[:, :, None, None], inv_gain[:, :, None, None]

    def analysis(self, x: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
        """x in [0, 1], (B, 3, H, W) with H, W multiples of STRIDE -> (y, z), both unquantized."""
        return self.latents_at(self.analysis_features(x), quality)

    def _transform(self, transform, x: Tensor) -> Tensor:
        """transform(x), under autocast when transform_dtype is set; the result is float32 either way."""
        if self.transform_dtype is None:
            return transform(x)
        with torch.autocast(x.device.type, dtype=self.transform_dtype):
            return transform(x).float()

    def analysis_features(self, x: Tensor) -> Tensor:
        """g_a(x) before the quality's gain: the costly part of analysis, the same at every quality."""
        return tiled(lambda t: self._transform(self.g_a, t), x, TILE, TILE_MARGIN, down=Y_STRIDE)

    def latents_at(self, features: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
        """(y, z) at `quality` from analysis_features(x): cheap, so a rate search can repeat it."""
        gain, _ = self.gains(quality)
        y = features * gain
        return y, self.h_a(y)

    def hyper_synthesis(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """z_hat -> (scales, means) of y's Gaussian conditional, in float."""
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def synthesis(self, y_hat: Tensor, quality: Tensor) -> Tensor:
        _, inv_gain = self.gains(quality)
        return tiled(lambda t: self._transform(self.g_s, t), y_hat * inv_gain, TILE // Y_STRIDE, TILE_MARGIN // Y_STRIDE, up=Y_STRIDE)

    def forward(self, x: Tensor, quality: Tensor) -> dict:
        y, z = self.analysis(x, quality)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.hyper_synthesis(z_hat)
        # Noise stands in for quantization in the rate term; the synthesis sees the rounded latent
        # (straight-through), as at inference: the "mixed" quantization of recent learned codecs.
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        y_hat = quantize_ste(y - means) + means
        return {
            "x_hat": self.synthesis(y_hat, quality),
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
        }
