"""The network at inference, in plain torch: what encode and decode run, without compressai.

It loads the state dict that training (aecodec.model.AECModel, compressai's MeanScaleHyperprior plus
gain units) writes, under the same keys, and computes the same float32 g_a, h_a and g_s. The entropy
models are only their frozen integer tables here (compressai's update()); whatever else the weights
file holds under them (the density models training reads) is kept as buffers, so state_dict()
round-trips to AECModel. Shared by both: the strides, the tiling and the quality -> gain mapping.

    x -> g_a -> *gain(q) -> y -> h_a -> z        y_hat -> *inv_gain(q) -> g_s -> x_hat
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import OptionError
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

# Synthesis precisions. bf16 runs g_s's convolutions on bf16 units (AMX, AVX512-BF16, tensor cores):
# only pixels change, never what the entropy decoder derives. The default is bf16 where it is expected to
# be faster than float32 (see default_precision), float32, the exact reference, elsewhere;
# AECODEC_PRECISION overrides it.
PRECISIONS = {"float32": torch.float32, "bf16": torch.bfloat16}
PRECISION_ENV = "AECODEC_PRECISION"


def synthesis_dtype(precision: str | None, device: torch.device) -> torch.dtype:
    """The dtype g_s runs in for a precision name, or for the default (None) on this device."""
    precision = precision or os.environ.get(PRECISION_ENV) or default_precision(device)
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def default_precision(device: torch.device) -> str:
    """"bf16" where this device runs the transforms faster in bf16 than in float32, else "float32"."""
    # bf16 where the hardware has dedicated bf16 matrix units (tensor cores from Ampere on; AMX: on an
    # Intel Xeon VM with AMX, bench.precision decoded 6 Kodak files in 0.8 s in bf16 against 1.3 s in
    # float32) or where bf16 was measured faster (Zen 4). AVX512-BF16 alone is not enough: on an Intel Xeon
    # VM with it and no AMX, 2.5 s in bf16 against 2.2 s. GPUs before Ampere only emulate bf16.
    if device.type == "cuda":
        with torch.cuda.device(device):
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float32"
    if device.type != "cpu":
        return "float32"
    if torch.cpu._is_amx_tile_supported():
        return "bf16"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() and _cpu_vendor() == "AuthenticAMD" else "float32"


@functools.cache
def _cpu_vendor() -> str:
    """The x86 vendor string (GenuineIntel, AuthenticAMD, ...), or "" where the OS does not say."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # Windows names it in the processor string ("AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD").
    return next((v for v in ("AuthenticAMD", "GenuineIntel") if v in platform.processor()), "")


@contextlib.contextmanager
def one_thread():
    """Run the enclosed tensor ops on the calling thread alone. For the many small ops of loading
    weights, waking the thread pool costs more than it saves: loading took 3x as long on 2 threads
    as on 1 on this (busy) 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
            if out is None:  # in the tiles' memory layout, so copying them in is a straight copy
                layout = torch.channels_last if piece.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
                out = torch.empty(batch, piece.shape[1], scaled(height), scaled(width), dtype=piece.dtype,
                                  device=piece.device, memory_format=layout)
            out[:, :, scaled(top) : scaled(bottom), scaled(left) : scaled(right)] = piece[
                :, :, scaled(top - ctx_top) : scaled(bottom - ctx_top), scaled(left - ctx_left) : scaled(right - ctx_left)
            ]
    return out


def interpolate_anchors(table: Tensor, quality: Tensor) -> Tensor:
    """Linear interpolation of rows of `table` (K, ...) at fractional anchor positions quality-1."""
    pos = (quality.to(table.dtype) - QUALITY_MIN).clamp(0, table.shape[0] - 1)
    lo = pos.floor().long().clamp(max=table.shape[0] - 2)
    t = (pos - lo.to(pos.dtype)).view(-1, *([1] * (table.dim() - 1)))
    return table[lo] * (1 - t) + table[lo + 1] * t


def lambda_for(quality: Tensor) -> Tensor:
    """Rate-distortion trade-off for each quality: log-linear between the anchor lambdas."""
    log_lambdas = torch.tensor(LAMBDAS, dtype=torch.float64).log()
    return interpolate_anchors(log_lambdas, quality.double().cpu()).exp().to(quality.device)


def run_in(transform: nn.Sequential, x: Tensor, dtype: torch.dtype | None) -> Tensor:
    """transform(x) as float32, every layer but the last under autocast in `dtype` (unless float32).

    The output layer stays float32: bf16's 8-bit mantissa rounds values near 1 to ~1/256, about a
    level. In g_s, on 6 Kodak images at quality 8, that cut bf16's PSNR cost from 0.018 to 0.006 dB
    for ~15 % of g_s's time; in training it keeps g_a's latents and g_s's pixels as fine as the
    top qualities need."""
    if dtype in (None, torch.float32):
        return transform(x)
    with torch.autocast(x.device.type, dtype=dtype):
        # channels-last: oneDNN's fast bf16 path (g_a at 768x512: 1.5x faster than the default layout)
        hidden = transform[:-1](x.contiguous(memory_format=torch.channels_last))
    return transform[-1](hidden.float())


class VariableRate:
    """Gain units (Cui et al., CVPR 2021) around the transforms, shared by AECModel and Network.

    Needs g_a, h_a, g_s, log_gain, log_inv_gain and _transform(transform, x, dtype)."""

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor]:
        """(gain, inverse gain), each (B, M, 1, 1), for a batch of qualities (B,)."""
        gain = interpolate_anchors(self.log_gain, quality).exp()
        inv_gain = interpolate_anchors(self.log_inv_gain, quality).exp()
        return gain[:, :, None, None], inv_gain[:, :, None, None]

    def analysis(self, x: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
        """x in [0, 1], (B, 3, H, W) with H, W multiples of STRIDE -> (y, z), both unquantized."""
        return self.latents_at(self.analysis_features(x), quality)

    def analysis_features(self, x: Tensor) -> Tensor:
        """g_a(x) before the quality's gain: the costly part of analysis, the same at every quality."""
        return tiled(lambda t: self._transform(self.g_a, t), x, TILE, TILE_MARGIN, down=Y_STRIDE)

    def latents_at(self, features: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
        """(y, z) at `quality` from analysis_features(x): cheap, so a rate search can repeat it."""
        gain, _ = self.gains(quality)
        y = features * gain
        return y, self.h_a(y)

    def synthesis(self, y_hat: Tensor, quality: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """y_hat -> x_hat (float32); dtype: the precision g_s computes in (None: the model's default)."""
        _, inv_gain = self.gains(quality)
        return tiled(lambda t: self._transform(self.g_s, t, dtype), y_hat * inv_gain,
                     TILE // Y_STRIDE, TILE_MARGIN // Y_STRIDE, up=Y_STRIDE)


class LowerBound(nn.Module):
    """compressai.ops.LowerBound at inference: max(x, bound)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bound", torch.empty(1))


class NonNegative(nn.Module):
    """compressai's NonNegativeParametrizer at inference: max(x, bound)**2 - pedestal."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pedestal", torch.empty(1))
        self.lower_bound = LowerBound()

    def forward(self, x: Tensor) -> Tensor:
        return torch.max(x, self.lower_bound.bound) ** 2 - self.pedestal


class GDN(nn.Module):
    """compressai's GDN: x * rsqrt(beta + conv1x1(x^2, gamma)), or * sqrt for the inverse (see gdn)."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.empty(channels))
        self.gamma = nn.Parameter(torch.empty(channels, channels))
        self.beta_reparam = NonNegative()
        self.gamma_reparam = NonNegative()

    def forward(self, x: Tensor) -> Tensor:
        return gdn(x, self.beta_reparam(self.beta), self.gamma_reparam(self.gamma), self.inverse)


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool) -> Tensor:
    """x * rsqrt(conv1x1(x^2, gamma) + beta), or * sqrt if inverse, from the reparametrised beta (C,) and
    gamma (C, C): with gradients through _GDN, else without keeping intermediates. Shared by decoding,
    effort and training (model.AECModel's GDN layers)."""
    # Reparametrised in float32 whatever x's dtype (as under autocast), then cast for the convolution.
    beta = beta.to(x.dtype)
    gamma = gamma.reshape(*gamma.shape, 1, 1).to(x.dtype)
    if torch.is_grad_enabled():
        return _GDN.apply(x, beta, gamma, inverse)
    # (The bands' out= products skip autocast: only for an x already in the dtype it would compute in.)
    autocast_keeps_dtype = not torch.is_autocast_enabled("cpu") or x.dtype == torch.get_autocast_dtype("cpu")
    if x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last) and autocast_keeps_dtype:
        return _gdn_in_bands(x, beta, gamma, inverse)
    # The same values without two more full-size tensors (GDN is ~1/3 of g_a's time at 768x512).
    norm = F.conv2d(x * x, gamma, beta)
    return (norm.sqrt_() if inverse else norm.rsqrt_()).mul_(x)


GDN_BAND_ROWS = 16


def _gdn_in_bands(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool) -> Tensor:
    """gdn at inference on a channels-last x (g_s's layout), GDN_BAND_ROWS rows of pixels at a time, each
    band's passes (square, 1x1 convolution as a matrix product, root, product) while it is in cache: the
    values of the convolution up to float rounding, g_s's last GDN ~25 % faster on a CPU (NEWS)."""
    batch, channels, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)  # a view: (pixels, channels)
    out = torch.empty_like(pixels)
    band = GDN_BAND_ROWS * width
    squares = torch.empty(min(band, pixels.shape[0]), channels, dtype=x.dtype)
    weights = gamma.reshape(channels, channels).t()
    for start in range(0, pixels.shape[0], band):
        rows = pixels[start : start + band]
        norm, square = out[start : start + band], squares[: rows.shape[0]]
        torch.addmm(beta, torch.mul(rows, rows, out=square), weights, out=norm)
        (norm.sqrt_() if inverse else norm.rsqrt_()).mul_(rows)
    return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class _GDN(torch.autograd.Function):
    """GDN with its gradients (to x, beta and gamma, each only where needed) in its own backward: fewer
    full-size passes than autograd's chain of square, convolution, root and product, which also keeps
    more of them: training steps ~10 % faster (N=128, batch 4 of 256x256, fp32 on a CPU), effort's g_s
    forward and backward ~15 % (NEWS)."""

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool) -> Tensor:
        squares = x * x
        root = F.conv2d(squares, gamma, beta)
        root = root.sqrt_() if inverse else root.rsqrt_()
        ctx.inverse = inverse
        ctx.save_for_backward(x, root, gamma, squares if ctx.needs_input_grad[2] else None)
        return x * root

    @staticmethod
    @torch.autograd.function.once_differentiable  # root is saved as a constant: no second derivative
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        # With norm = conv1x1(x^2, gamma) + beta and root = norm^(+-1/2): dL/dnorm_i = sign * inner_i / 2,
        # where inner = grad * x / root, sign = 1 (inverse) or inner = grad * x * root^3, sign = -1; then
        # dL/dx_j = grad_j * root_j + sign * x_j * sum_i gamma_ij * inner_i (the root's 1/2 cancels the
        # square's 2), dL/dbeta_i = sign * the sum of inner_i / 2 and dL/dgamma_ij = sign * the sum of
        # inner_i * x_j^2 / 2 over batch and positions.
        x, root, gamma, squares = ctx.saved_tensors
        inner = (grad * x).div_(root) if ctx.inverse else (grad * x).mul_(root).mul_(root).mul_(root)
        sign = 1.0 if ctx.inverse else -1.0
        grad_x = grad_beta = grad_gamma = None
        if ctx.needs_input_grad[0]:
            spread = F.conv2d(inner, gamma.transpose(0, 1))
            grad_x = (grad * root).addcmul_(x, spread, value=sign)
        if ctx.needs_input_grad[1]:
            grad_beta = inner.sum((0, 2, 3)).mul_(0.5 * sign)
        if ctx.needs_input_grad[2]:
            # (pixels, channels) matrices: views of channels-last tensors (training's layout), else copies
            inner, squares = (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) for t in (inner, squares))
            grad_gamma = (inner.t() @ squares).mul_(0.5 * sign).reshape(gamma.shape)
        return grad_x, grad_beta, grad_gamma, None


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


def deconv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                              output_padding=stride - 1)


class OutputDeconv(nn.ConvTranspose2d):
    """deconv(in_channels, out_channels) computed as a 3x3 convolution to four times the channels, one
    set per phase of the output pixels (row and column parity), then a pixel shuffle: the same
    parameters and values up to float rounding. oneDNN runs that dense convolution ~2x faster than the
    transposed one for g_s's 3-channel output layer (NEWS), but not for the 128-channel layers."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 5, 2, padding=2, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # Output pixel 2i + p takes inputs i - 1 + d through taps p + 4 - 2d (d = 0..2; tap 5 is none).
        phases = [F.pad(self.weight[:, :, row::2, column::2].flip(2, 3), (column, 0, row, 0))
                  for row in (0, 1) for column in (0, 1)]
        kernel = torch.stack(phases).permute(2, 0, 1, 3, 4).reshape(-1, self.in_channels, 3, 3)
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, kernel, bias, padding=1), 2)


class Buffers(nn.Module):
    """Adopts, as buffers, whatever tensors a state dict holds under this module's name: an entropy
    model's frozen tables (their sizes come from the weights file) and its training-only parameters."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            *path, name = key[len(prefix):].split(".")
            module = self
            for part in path:
                if part not in module._modules:
                    module.add_module(part, Buffers())
                module = module._modules[part]
            module.register_buffer(name, value.detach().clone())


class Network(VariableRate, nn.Module):
    """The mean-scale hyperprior with gain units, for coding: from_state_dict() of what AECModel saves."""

    # What the coder reads from the entropy models: z's tables and medians, y's tables and scale table.
    TABLES = {
        "entropy_bottleneck": ("quantiles", "_quantized_cdf", "_cdf_length", "_offset"),
        "gaussian_conditional": ("scale_table", "_quantized_cdf", "_cdf_length", "_offset"),
    }

    def __init__(self, N: int = 64, M: int = 128):
        super().__init__()
        self.N, self.M = int(N), int(M)
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
                                 deconv(N, N), GDN(N, inverse=True), OutputDeconv(N, 3))
        self.h_a = nn.Sequential(conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(), conv(N, N), nn.LeakyReLU(), conv(N, N))
        self.h_s = nn.Sequential(deconv(N, M), nn.LeakyReLU(), deconv(M, M * 3 // 2), nn.LeakyReLU(),
                                 conv(M * 3 // 2, M * 2, stride=1, kernel_size=3))
        self.log_gain = nn.Parameter(torch.empty(0, M))
        self.log_inv_gain = nn.Parameter(torch.empty(0, M))
        self.entropy_bottleneck = Buffers()
        self.gaussian_conditional = Buffers()

    @property
    def config(self) -> dict:
        return {"N": self.N, "M": self.M}

    @classmethod
    def from_state_dict(cls, state_dict: dict, N: int, M: int) -> "Network":
        """The network holding AECModel's state dict, floating-point tensors as float32 (KeyError or
        RuntimeError name what is missing or misshapen), frozen for inference. Without g_a's tensors it
        decodes only: g_a and h_a are None."""
        with one_thread():
            state_dict = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
        with torch.device("meta"):  # no random initialisation of weights the state dict replaces
            net = cls(N, M)
        # The gain tables' row count (anchor qualities) comes from the weights, like the entropy tables.
        net.log_gain = nn.Parameter(torch.empty_like(state_dict["log_gain"], device="meta"))
        net.log_inv_gain = nn.Parameter(torch.empty_like(state_dict["log_inv_gain"], device="meta"))
        if not any(key.startswith("g_a.") for key in state_dict):  # decoder-only weights (weights.decoder_only)
            net.g_a = net.h_a = None
        net.load_state_dict(state_dict, assign=True)
        for module, names in cls.TABLES.items():
            missing = [name for name in names if not hasattr(getattr(net, module), name)]
            if missing:
                raise KeyError(f"{module} lacks {', '.join(missing)}: weights saved before their tables were frozen")
        return net.eval().requires_grad_(False)

    def z_medians(self) -> Tensor:
        """The entropy bottleneck's medians, (1, N, 1, 1): z is coded as offsets from them."""
        return self.entropy_bottleneck.quantiles[:, 0, 1].reshape(1, -1, 1, 1)

    def _transform(self, transform: nn.Module, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """transform(x) as float32, computed in `dtype` (under autocast, but for the last layer) unless float32.

        g_s runs channels-last, oneDNN's fast path on CPU (1.5-2x here; pixels equal up to float
        rounding), and on CPU its result stays channels-last (OutputDeconv's pixel shuffle keeps the
        layout there; on CUDA it returns NCHW): for one image that is (H, W, 3) in memory, what the image
        module wants. g_a keeps the default layout: there it computes exactly what
        compressai's does, so files are byte-identical to the training model's, and channels-last was
        no faster."""
        if transform is self.g_s:
            x = x.contiguous(memory_format=torch.channels_last)
        return run_in(transform, x, dtype)
