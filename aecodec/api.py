"""The public API: encode(image, quality) -> bytes and decode(bytes) -> PIL image. Orchestration only."""

from __future__ import annotations

import contextlib
import functools
import math
import time

import numpy as np
import torch

from . import format as aec_format
from . import image as images
from . import lossless as lossless_coding
from . import refine
from .effort import EFFORT_MAX_SAVING, check_effort, optimize_latents
from .errors import DecodeError, OptionError
from .network import STRIDE, lambda_for, synthesis_dtype
from .quality import DEFAULT_QUALITY, LEARNED_MAX, QUALITY_MAX, QUALITY_MIN, check_quality
from .weights import RELEASES, Model, find, load

RATE_SEARCH_STEP = 0.01  # quality resolution of a rate search: about 0.3 % of the bitrate
CODINGS = ("auto", "learned", "lossless")
# auto considers a lossless file only up to this many times the learned file's size: photos' lossless
# files are >= 5x their learned ones at every quality (Kodak: 5.3x at worst, kodim01 at quality 10), so
# they always stay learned; synthetic images that the model renders badly are within it (a matplotlib
# chart: 1.2x at quality 6).
LOSSLESS_MAX_RATIO = 2.0
# WebP's fastest effort gives files at most this much bigger than its default effort (measured: 1.05-1.16x
# on Kodak, 2.2x on bench.synthetic's matplotlib chart): a fast estimate above FAST_ESTIMATE_SLACK x the
# bound rules lossless out
# without paying for the default effort (~0.6 s for a 768x512 photo).
FAST_ESTIMATE_SLACK = 2.5
_stage_times: dict | None = None  # set by record_stages(), for the speed benchmark


@contextlib.contextmanager
def record_stages():
    """Collect the seconds spent in each stage of encode/decode inside this block into the yielded dict."""
    global _stage_times
    _stage_times = {}
    try:
        yield _stage_times
    finally:
        _stage_times = None


@contextlib.contextmanager
def _stage(name: str, device: torch.device | None = None):
    if _stage_times is None:
        yield
        return
    start = time.perf_counter()
    yield
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    _stage_times[name] = _stage_times.get(name, 0.0) + time.perf_counter() - start


def _device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_stored(quality: float) -> float:
    """The quality as the header keeps it: to 1/1000."""
    return round(quality * 1000) / 1000


def _model(weights) -> Model:
    return weights if isinstance(weights, Model) else load(weights)


def encode(image, quality: float | None = None, *, target_bpp: float | None = None, target_bytes: int | None = None,
           mode: str = "auto", lossless: bool = False, effort: int = 0, weights=None, backend: str | None = None,
           device=None, progress: bool = False) -> bytes:
    """Compress an image to .aec bytes.

    image: a path, PIL image, NumPy array (H, W[, C]) uint8/uint16/float in [0, 1], or tensor ([1,] C, H, W).
    quality: float in [QUALITY_MIN, QUALITY_MAX] (higher = more bits, better fidelity), kept to 1/1000;
        default DEFAULT_QUALITY.
    target_bpp, target_bytes: rate control, instead of a quality: the highest quality (in steps of 0.01) whose
        whole file fits, found by bisection; the analysis transform runs once. OptionError if even QUALITY_MIN
        does not fit.
    mode: "learned" (the model), "lossless" (exact: WebP lossless or PNG inside the .aec container; takes no
        quality or target) or "auto" (default): lossless when that file is no bigger than the learned one,
        or at most LOSSLESS_MAX_RATIO x bigger and worth its extra bits by the rate-distortion trade-off the
        quality stands for (see _prefer_lossless); with a rate target, the lossless file whenever it fits.
    lossless: True is mode="lossless".
    effort: 0 (fastest, the default) to 3: spend encode time optimizing the latents for this image, for
        fewer bits at the same fidelity (see aecodec.effort); every decoder reads the result.
    weights: a shipped model name, a weights file path or a loaded Model (default: the shipped model).
    backend: entropy coder, "python" or "native" (default: native when built).
    device: where the transforms run ("cpu", "cuda"; default: cuda when available).
    progress: show a progress bar (on stderr) while effort > 0 optimizes.
    """
    effort = check_effort(effort)
    if sum(v is not None for v in (quality, target_bpp, target_bytes)) > 1:
        raise OptionError("give one of quality, target_bpp and target_bytes")
    if lossless and mode not in ("auto", "lossless"):
        raise OptionError(f"lossless=True contradicts mode={mode!r}")
    mode = "lossless" if lossless else mode
    if mode not in CODINGS:
        raise OptionError(f"mode must be one of {', '.join(CODINGS)}, got {mode!r}")
    if mode == "lossless":
        if quality is not None or target_bpp is not None or target_bytes is not None:
            raise OptionError("lossless coding takes no quality or rate target")
        with _stage("image"):
            return _lossless_file(images.load(image))
    if target_bpp is None and target_bytes is None:
        quality = _as_stored(check_quality(DEFAULT_QUALITY if quality is None else quality))
    for name, target in (("target_bpp", target_bpp), ("target_bytes", target_bytes)):
        if target is not None and not target > 0:  # also refuses NaN
            raise OptionError(f"{name} must be a positive number, got {target}")
    model = _model(weights)
    if not model.encodes:
        raise OptionError(f"{model.name} ships decoder-only: it decodes its files but makes none "
                          f"(encoding models: {', '.join(r.name for r in RELEASES.values() if r.encodes)})")
    dev = _device(device)
    with _stage("image", dev):
        picture = images.load(image)
        x = images.to_network(picture.colour, STRIDE).to(dev)
        alpha = images.encode_alpha(picture.alpha) if picture.alpha is not None else b""
    net = model.net.to(dev)
    with _stage("network", dev), torch.inference_mode():
        features = net.analysis_features(x)

    def learned_at(quality: float, effort: int) -> tuple[dict, int]:
        with _stage("network", dev), torch.inference_mode():
            y, z = net.latents_at(features, torch.tensor([quality], device=dev))
        if effort:
            with _stage("effort", dev):
                y, z = optimize_latents(net, x, y, z, torch.tensor([quality], device=dev), effort,
                                        picture.height, picture.width, progress)
        with _stage("entropy"):
            streams, symbols_crc = model.latents.encode(y, z, backend=backend)
        return {**streams, "alpha": alpha}, symbols_crc

    @functools.cache
    def refinement_base(quality: float, effort: int) -> tuple[dict, int, np.ndarray, np.ndarray]:
        """The learned file a refinement adds to, its decoded channels (in float32, so the residual does not
        depend on this machine's default precision) and its activity map."""
        streams, symbols_crc = learned_at(quality, effort)
        header = aec_format.Header(picture.mode, model.model_id, quality, picture.width, picture.height, symbols_crc)
        colour, y_values, _ = _decode_colour(model, header, streams, backend, dev, torch.float32)
        return streams, symbols_crc, refine.channels(picture.mode, colour), refine.activity(y_values)

    def encode_at(quality: float, effort: int = effort) -> bytes:
        plan = refine.plan(quality)
        learned_quality = None
        if plan:
            learned_quality, step = plan
            streams, symbols_crc, decoded, activity = refinement_base(learned_quality, effort)
            with _stage("refine"):
                refinement = refine.encode(refine.channels(picture.mode, picture.colour), decoded, activity, step,
                                           backend)
            streams = {**streams, "refine": refinement}
        else:
            streams, symbols_crc = learned_at(quality, effort)
        with _stage("container"):
            header = aec_format.Header(picture.mode, model.model_id, quality, picture.width, picture.height,
                                       symbols_crc, learned_quality=learned_quality)
            return aec_format.pack(header, streams)

    exact_possible = mode == "auto" and not picture.lost
    if quality is not None:
        learned = encode_at(quality)
        if not exact_possible or not _lossless_may_win(picture, LOSSLESS_MAX_RATIO * len(learned)):
            return learned
        exact = _lossless_file(picture)
        if len(exact) <= len(learned):
            return exact
        if len(exact) > LOSSLESS_MAX_RATIO * len(learned):
            return learned
        decoded = decode(learned, weights=model, backend=backend, device=device)
        return exact if _prefer_lossless(picture, quality, decoded, len(learned), len(exact)) else learned
    budget = target_bytes if target_bytes is not None else target_bpp * picture.width * picture.height / 8
    if exact_possible and _lossless_may_win(picture, budget):
        exact = _lossless_file(picture)
        if len(exact) <= budget:  # nothing that fits is better than the image itself
            return exact
    if effort:
        return _fit_budget_with_effort(encode_at, budget)
    return _fit_budget(encode_at, budget)[1]


def _lossless_file(picture: images.Picture) -> bytes:
    with _stage("lossless"):
        coding, payload = lossless_coding.encode(picture)
        mode = "I;16" if picture.grey16 is not None else picture.mode
        header = aec_format.Header(mode, None, None, picture.width, picture.height, coding=coding)
        return aec_format.pack_lossless(header, payload)


def _lossless_may_win(picture: images.Picture, max_bytes: float) -> bool:
    """False when WebP's fastest lossless effort shows that a lossless file cannot be under max_bytes."""
    with _stage("lossless"):
        _, estimate = lossless_coding.encode(picture, fast=True)
    return len(estimate) <= FAST_ESTIMATE_SLACK * max_bytes


def _prefer_lossless(picture: images.Picture, quality: float, decoded, learned_bytes: int, exact_bytes: int) -> bool:
    """The training objective at this quality, rate + lambda(q) * MSE (bits per pixel, MSE on 0..255 RGB):
    lossless (MSE 0) wins when its extra bits cost less than the learned file's distortion."""
    colour = np.asarray(decoded.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((colour - picture.colour) ** 2))
    extra_bpp = 8 * (exact_bytes - learned_bytes) / (picture.width * picture.height)
    # Above the model's range each quality halves the refinement step: the MSE a bit buys falls ~4x.
    lam = float(lambda_for(torch.tensor([min(quality, LEARNED_MAX)]))) * 4.0 ** max(0.0, quality - LEARNED_MAX)
    return extra_bpp <= lam * mse


def _quality_at(step: int) -> float:
    return _as_stored(QUALITY_MIN + step * RATE_SEARCH_STEP)


LAST_STEP = round((QUALITY_MAX - QUALITY_MIN) / RATE_SEARCH_STEP)


def _fit_budget(encode_at, budget: float, low: int = 0) -> tuple[int, bytes]:
    """(step, file) of the highest quality, on a grid of RATE_SEARCH_STEP from `low` up, whose file is at
    most `budget` bytes.

    Bisection: file sizes grow with quality almost everywhere, and whatever it returns does fit."""
    def at(step: int) -> bytes:
        return encode_at(_quality_at(step))

    high = LAST_STEP
    best = at(low)
    if len(best) > budget:
        raise OptionError(f"cannot fit {budget:.0f} bytes: the smallest file, at quality {_quality_at(low):g}, "
                         f"takes {len(best)} bytes")
    top = at(high)
    if len(top) <= budget:
        return high, top
    while high - low > 1:  # invariant: at(low) fits (it is `best`), at(high) does not
        middle = (low + high) // 2
        data = at(middle)
        if len(data) <= budget:
            low, best = middle, data
        else:
            high = middle
    return low, best


def _fit_budget_with_effort(encode_at, budget: float) -> bytes:
    """The rate search when each encode optimizes (costly): effort 0's cheap searches bracket the answer,
    since effort's files are at most a little bigger and at least 1 - EFFORT_MAX_SAVING of effort 0's at a
    quality, then a search with the effort encoder inside
    the bracket, its probes placed by log-linear interpolation of the sizes (alternating with bisection,
    so it never takes more than twice bisection's probes). Whatever it returns does fit."""
    plain = functools.partial(encode_at, effort=0)
    low, plain_best = _fit_budget(plain, budget)  # the floor of the search
    cap, plain_cap = _fit_budget(plain, budget / (1 - EFFORT_MAX_SAVING), low)
    best = encode_at(_quality_at(low))
    # Effort made this file larger (it spent bytes on fidelity, as the image's own slope asked): effort 0's
    # answer is returned rather than an effort file of a lower quality.
    if len(best) > budget:
        return plain_best
    sizes = {low: len(best)}
    # Above the bracket effort files are assumed too big: sizes there are extrapolated, never probed.
    slope = math.log(len(plain_cap) / len(plain_best)) / (cap - low) if cap > low else math.log(1.5) / 100
    high = cap + 1
    if cap == LAST_STEP:
        top = encode_at(_quality_at(cap))
        if len(top) <= budget:
            return top
        high, sizes[cap] = cap, len(top)
    interpolate = True
    while high - low > 1:
        middle = (low + high) // 2
        if interpolate:
            log_high = math.log(sizes[high]) if high in sizes else math.log(sizes[low]) + slope * (high - low)
            fraction = (math.log(budget) - math.log(sizes[low])) / max(log_high - math.log(sizes[low]), 1e-9)
            middle = min(high - 1, max(low + 1, round(low + fraction * (high - low))))
        interpolate = not interpolate
        data = encode_at(_quality_at(middle))
        sizes[middle] = len(data)
        if len(data) <= budget:
            low, best = middle, data
        else:
            high = middle
    return best


OUTPUTS = ("pil", "numpy", "torch")


def decode(data: bytes, *, weights=None, backend: str | None = None, device=None, precision: str | None = None,
           output: str = "pil"):
    """Decompress .aec bytes to an image of the original size and mode (L, LA, RGB, RGBA; lossless
    files of 16-bit grey: I;16).

    precision: what the synthesis transform computes in, "float32" or "bf16" (default: bf16 where the
        hardware runs it faster, else float32; env AECODEC_PRECISION). Only pixels depend on it, by a fraction
        of a level: the bitstream's decoding is exact either way.
    output: "pil" (a PIL image), "numpy" ((H, W) for one channel, else (H, W, C)) or "torch" ((C, H, W)),
        uint8 (uint16 for I;16): arrays skip PIL for learned RGB and RGBA.
    Raises aecodec.DecodeError for any damaged, truncated or foreign file, never returns a wrong image."""
    if output not in OUTPUTS:
        raise OptionError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    dev = _device(device)
    dtype = synthesis_dtype(precision, dev)
    with _stage("container"):
        header, streams = aec_format.unpack(data)
    if header.lossless:
        with _stage("lossless"):
            image = lossless_coding.decode(header.mode, header.coding, header.width, header.height, streams["image"])
            return image if output == "pil" else _array_output(np.array(image), output)
    model = find(header.model_id, [_model(weights)] if weights is not None else [])
    if model is None:
        raise DecodeError(
            f"file was made by model {header.model_id.hex()}, which this aecodec does not have "
            f"(released models: {', '.join(RELEASES)}; pass weights= for others)"
        )
    colour, y_values, alpha = _decode_colour(model, header, streams, backend, dev, dtype, with_alpha=True)
    if header.refined:
        with _stage("refine"):
            refined = refine.decode(streams["refine"], refine.channels(header.mode, colour),
                                    refine.activity(y_values), backend)
            colour = refine.to_colour(refined)
    with _stage("image", dev):
        if output == "pil":
            return images.assemble(header.mode, colour, alpha)
        return _array_output(images.assemble_array(header.mode, colour, alpha), output)


def _decode_colour(model: Model, header: aec_format.Header, streams: dict, backend, dev, dtype, with_alpha=False):
    """A learned file's decoded colour (H, W, 3) uint8 before any refinement, y's quantized values (what a
    refinement's activity map comes from) and alpha (when with_alpha, else None)."""
    if not QUALITY_MIN <= header.model_quality <= LEARNED_MAX:
        raise DecodeError(f"the model's quality {header.model_quality:g} is outside its range "
                          f"[{QUALITY_MIN:g}, {LEARNED_MAX:g}]")
    has_alpha = header.mode in ("LA", "RGBA")
    if has_alpha != bool(streams["alpha"]):
        raise DecodeError("alpha stream does not match the image mode")
    alpha = None
    if with_alpha and has_alpha:
        with _stage("image"):  # before the expensive stages: a damaged alpha plane fails fast
            alpha = images.decode_alpha(streams["alpha"], header.width, header.height)
    pad_h, pad_w = -(-header.height // STRIDE) * STRIDE, -(-header.width // STRIDE) * STRIDE
    z_shape = (model.net.N, pad_h // STRIDE, pad_w // STRIDE)
    with _stage("entropy"):
        y_hat, y_values = model.latents.decode(streams, z_shape, header.symbols_crc, backend=backend)
    net = model.net.to(dev)
    with _stage("network", dev), torch.inference_mode():
        x_hat = net.synthesis(y_hat.to(dev), torch.tensor([header.model_quality], device=dev), dtype)
    with _stage("image", dev):
        colour = images.from_network(x_hat, header.width, header.height)
    return colour, y_values, alpha


def _array_output(array: np.ndarray, output: str):
    """(H, W[, C]) array -> itself for "numpy", a (C, H, W) tensor for "torch"."""
    return array if output == "numpy" else torch.from_numpy(array).reshape(*array.shape[:2], -1).permute(2, 0, 1)
