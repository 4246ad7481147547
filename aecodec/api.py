"""The public API: encode(image, quality) -> bytes and decode(bytes) -> PIL image. Orchestration only."""

from __future__ import annotations

import contextlib
import time

import torch

from . import format as aec_format
from . import image as images
from .errors import DecodeError, OptionError
from .model import STRIDE
from .quality import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN, check_quality
from .weights import RELEASES, Model, find, load

RATE_SEARCH_STEP = 0.01  # quality resolution of a rate search: about 0.3 % of the bitrate
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
           weights=None, backend: str | None = None, device=None) -> bytes:
    """Compress an image to .aec bytes.

    image: a path, PIL image, NumPy array (H, W[, C]) uint8/uint16/float in [0, 1], or tensor ([1,] C, H, W).
    quality: float in [QUALITY_MIN, QUALITY_MAX] (higher = more bits, better fidelity), kept to 1/1000;
        default DEFAULT_QUALITY.
    target_bpp, target_bytes: rate control, instead of a quality: the highest quality (in steps of 0.01) whose
        whole file fits, found by bisection; the analysis transform runs once. OptionError if even QUALITY_MIN
        does not fit.
    weights: a shipped model name, a weights file path or a loaded Model (default: the shipped model).
    backend: entropy coder, "python" or "native" (default: native when built).
    device: where the transforms run ("cpu", "cuda"; default: cuda when available).
    """
    if sum(v is not None for v in (quality, target_bpp, target_bytes)) > 1:
        raise OptionError("give one of quality, target_bpp and target_bytes")
    if target_bpp is None and target_bytes is None:
        quality = _as_stored(check_quality(DEFAULT_QUALITY if quality is None else quality))
    for name, target in (("target_bpp", target_bpp), ("target_bytes", target_bytes)):
        if target is not None and not target > 0:  # also refuses NaN
            raise OptionError(f"{name} must be a positive number, got {target}")
    model = _model(weights)
    dev = _device(device)
    with _stage("image", dev):
        picture = images.load(image)
        x = images.to_network(picture.colour, STRIDE).to(dev)
        alpha = images.encode_alpha(picture.alpha) if picture.alpha is not None else b""
    net = model.net.to(dev)
    with _stage("network", dev), torch.inference_mode():
        features = net.analysis_features(x)

    def encode_at(quality: float) -> bytes:
        with _stage("network", dev), torch.inference_mode():
            y, z = net.latents_at(features, torch.tensor([quality], device=dev))
        with _stage("entropy"):
            streams, symbols_crc = model.latents.encode(y, z, backend=backend)
        with _stage("container"):
            header = aec_format.Header(picture.mode, model.model_id, quality, picture.width, picture.height, symbols_crc)
            return aec_format.pack(header, {**streams, "alpha": alpha})

    if quality is not None:
        return encode_at(quality)
    budget = target_bytes if target_bytes is not None else target_bpp * picture.width * picture.height / 8
    return _fit_budget(encode_at, budget)


def _fit_budget(encode_at, budget: float) -> bytes:
    """The file of the highest quality, on a grid of RATE_SEARCH_STEP, that is at most `budget` bytes.

    Bisection: file sizes grow with quality almost everywhere, and whatever it returns does fit."""
    def at(step: int) -> bytes:
        return encode_at(_as_stored(QUALITY_MIN + step * RATE_SEARCH_STEP))

    low, high = 0, round((QUALITY_MAX - QUALITY_MIN) / RATE_SEARCH_STEP)
    best = at(low)
    if len(best) > budget:
        raise OptionError(f"cannot fit {budget:.0f} bytes: the smallest file, at quality {QUALITY_MIN:g}, "
                         f"takes {len(best)} bytes")
    top = at(high)
    if len(top) <= budget:
        return top
    while high - low > 1:  # invariant: at(low) fits (it is `best`), at(high) does not
        middle = (low + high) // 2
        data = at(middle)
        if len(data) <= budget:
            low, best = middle, data
        else:
            high = middle
    return best


def decode(data: bytes, *, weights=None, backend: str | None = None, device=None):
    """Decompress .aec bytes to a PIL image of the original size and mode (L, LA, RGB or RGBA).

    Raises aecodec.DecodeError for any damaged, truncated or foreign file, never returns a wrong image."""
    with _stage("container"):
        header, streams = aec_format.unpack(data)
    model = find(header.model_id, [_model(weights)] if weights is not None else [])
    if model is None:
        raise DecodeError(
            f"file was made by model {header.model_id.hex()}, which this aecodec does not have "
            f"(released models: {', '.join(RELEASES)}; pass weights= for others)"
        )
    has_alpha = header.mode in ("LA", "RGBA")
    if has_alpha != bool(streams["alpha"]):
        raise DecodeError("alpha stream does not match the image mode")
    pad_h, pad_w = -(-header.height // STRIDE) * STRIDE, -(-header.width // STRIDE) * STRIDE
    z_shape = (model.net.N, pad_h // STRIDE, pad_w // STRIDE)
    with _stage("entropy"):
        y_hat = model.latents.decode(streams, z_shape, header.symbols_crc, backend=backend)
    dev = _device(device)
    net = model.net.to(dev)
    with _stage("network", dev), torch.inference_mode():
        x_hat = net.synthesis(y_hat.to(dev), torch.tensor([header.quality], device=dev))
    with _stage("image", dev):
        colour = images.from_network(x_hat, header.width, header.height)
        alpha = images.decode_alpha(streams["alpha"], header.width, header.height) if has_alpha else None
        return images.assemble(header.mode, colour, alpha)
