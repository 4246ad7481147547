"""The network as training sees it: a mean-scale hyperprior (Minnen et al. 2018) with gain units.

The transforms and entropy models are compressai's; what is ours is the rate control. Coding runs
aecodec.network.Network instead: the same state dict and transforms in plain torch, no compressai. One model covers
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
    from compressai.layers import GDN
    from compressai.models import MeanScaleHyperprior
    from compressai.ops import quantize_ste

from .errors import WeightsError
from . import network
from .network import VariableRate, run_in
from .quality import LAMBDAS


class TrainingGDN(GDN):
    """compressai's GDN (its parameters and their reparametrisation) computed as the coding network's
    GDN computes (network.gdn): the same values, and its gradients in fewer passes than autograd's."""

    forward = network.GDN.forward


class AECModel(VariableRate, MeanScaleHyperprior):
    """compressai's MeanScaleHyperprior(N, M) plus gain units; forward() takes a quality per image."""

    def __init__(self, N: int = 64, M: int = 128):
        super().__init__(N=N, M=M)
        for transform in (self.g_a, self.g_s):
            for i, layer in enumerate(transform):
                if isinstance(layer, GDN):  # GDN's initial state is fixed: no random draws change
                    transform[i] = TrainingGDN(layer.beta.numel(), inverse=layer.inverse)
        # Training may run the transforms (not the entropy models) under bf16 autocast; None: float32.
        self.transform_dtype: torch.dtype | None = None
        # Gain ~ 1/quantization step, D ~ step^2 and lambda ~ 1/D: start the gains at sqrt(lambda).
        log_lambdas = torch.tensor(LAMBDAS, dtype=torch.float32).log()
        init = 0.5 * (log_lambdas - log_lambdas.mean())
        self.log_gain = nn.Parameter(init[:, None].repeat(1, M))
        self.log_inv_gain = nn.Parameter(-init[:, None].repeat(1, M))

    @classmethod
    def from_weights(cls, weights=None) -> "AECModel":
        """The trainable model holding the parameters of a loaded Model, a shipped model (by name) or a
        weights file."""
        from .weights import Model, load

        loaded = weights if isinstance(weights, Model) else load(weights)
        if not loaded.encodes:
            raise WeightsError(f"{loaded.name} ships decoder-only: without its analysis transforms it can neither "
                               "train nor encode (start from the default model or a weights file)")
        net = loaded.net
        model = cls(**net.config)
        model.load_state_dict({key: value.cpu() for key, value in net.state_dict().items()})
        return model

    @property
    def config(self) -> dict:
        return {"N": self.N, "M": self.M}

    def _transform(self, transform, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """transform(x) as float32, computed in dtype (default: transform_dtype; see network.run_in)."""
        return run_in(transform, x, dtype or self.transform_dtype)

    def hyper_synthesis(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """z_hat -> (scales, means) of y's Gaussian conditional, in float."""
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

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
