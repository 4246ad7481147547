"""Images in and out: accepted inputs, mode handling, padding to the model's stride and back.

Coded modes are L, LA, RGB and RGBA. Colour goes through the network (grey as three equal channels);
alpha is kept losslessly in its own stream (PNG-compressed). Other inputs are converted:
palette -> RGB or RGBA, CMYK/YCbCr/LAB/HSV -> RGB, bilevel -> L, 16-bit grey -> 8-bit L (top 8 bits),
16-bit arrays -> 8 bits. EXIF orientation is applied. Multi-frame images are refused.
Lossless coding stores what the learned path sees, except that 16-bit grey keeps its 16 bits
(Picture.grey16); inputs whose 8-bit reading loses more (16-bit colour or alpha, 32-bit integer grey
outside 0..65535) say so in Picture.lost, and lossless coding refuses them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
_CONVERT_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_CHANNELS_TO_MODE = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@dataclass
class Picture:
    """An image split into what the network codes (colour) and what it does not (alpha)."""

    mode: str  # L, LA, RGB or RGBA
    colour: np.ndarray  # (H, W, 3) uint8; grey replicated to three channels
    alpha: np.ndarray | None  # (H, W) uint8
    grey16: np.ndarray | None = None  # (H, W) uint16: a 16-bit grey input at full depth, for lossless coding
    lost: str | None = None  # what reading the input as 8 bits lost beyond grey16, if anything

    @property
    def width(self) -> int:
        return self.colour.shape[1]

    @property
    def height(self) -> int:
        return self.colour.shape[0]


def _from_pil(img) -> tuple[np.ndarray, str]:
    from PIL import ImageOps

    if getattr(img, "n_frames", 1) > 1:
        raise ImageError(f"multi-frame image ({img.n_frames} frames): aecodec codes still images; extract one frame first")
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode in _CONVERT_TO_RGB:
        img = img.convert("RGB")
    elif mode.startswith("I"):  # I;16, I;16B, I: 16-bit grey, returned as uint16 (load() keeps both depths)
        array = np.asarray(img).astype(np.int64)
        if array.min() < 0 or array.max() > 65535:
            raise _Lost(np.clip(array, 0, 65535).astype(np.uint16), f"{mode} values outside 0..65535")
        return array.astype(np.uint16), "L"
    elif mode == "La":
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    if img.mode not in _CHANNELS_TO_MODE.values():
        raise ImageError(f"unsupported image mode {mode!r}")
    return np.asarray(img), img.mode


def _from_array(array: np.ndarray) -> tuple[np.ndarray, str]:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if channels not in _CHANNELS_TO_MODE:
        raise ImageError(f"an image array is (H, W) or (H, W, C) with C in 1..4, got shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        if channels > 1:
            raise _Lost((array >> 8).astype(np.uint8), "16-bit colour or alpha (16 bits are kept for grey only)")
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("image array holds NaN or infinity")
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    else:
        raise ImageError(f"image arrays must be uint8, uint16 or float in [0, 1], got {array.dtype}")
    return array, _CHANNELS_TO_MODE[channels]


class _Lost(Exception):
    """An input read with a loss that lossless coding must refuse: carries the array read and what was lost."""

    def __init__(self, array: np.ndarray, what: str):
        super().__init__(what)
        self.array, self.what = array, what


def load(image) -> Picture:
    """A path, PIL image, NumPy array (H, W[, C]) or torch tensor ([1,] C, H, W) -> Picture."""
    try:
        array, mode = _read(image)
        lost = None
    except _Lost as reduced:
        array, lost = reduced.array, reduced.what
        mode = _CHANNELS_TO_MODE[1 if array.ndim == 2 else array.shape[2]]
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError("image is empty")
    grey16 = None
    if array.dtype == np.uint16:
        grey16, array = np.ascontiguousarray(array), (array >> 8).astype(np.uint8)
    array = np.ascontiguousarray(array)
    if mode in ("L", "LA"):
        grey = array if mode == "L" else array[:, :, 0]
        colour = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        colour = array[:, :, :3]
    alpha = array[:, :, -1] if mode in ("LA", "RGBA") else None
    return Picture(mode, np.ascontiguousarray(colour), None if alpha is None else np.ascontiguousarray(alpha),
                   grey16, lost)


def _read(image) -> tuple[np.ndarray, str]:
    """The input as an (H, W[, C]) array, uint8 or (1-channel) uint16, and its mode."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as img:
                img.load()
                array, mode = _from_pil(img)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot read image {os.fspath(image)!r}: {exc}") from exc
    elif isinstance(image, Image.Image):
        array, mode = _from_pil(image)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 3:
            raise ImageError(f"an image tensor is (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
        array, mode = _from_array(tensor.permute(1, 2, 0).numpy())
    elif isinstance(image, np.ndarray):
        array, mode = _from_array(image)
    else:
        raise ImageError(f"cannot code an object of type {type(image).__name__}; give a path, PIL image, array or tensor")
    return array, mode


def to_network(colour: np.ndarray, stride: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') float in [0, 1], edge-padded up to multiples of `stride`."""
    x = torch.tensor(colour).permute(2, 0, 1)[None].float() / 255.0
    h, w = colour.shape[:2]
    pad_h, pad_w = -h % stride, -w % stride
    if pad_h or pad_w:
        # Replicating the border codes cheaper than zeros; reflect cannot pad more than the side.
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def from_network(x_hat: torch.Tensor, width: int, height: int) -> np.ndarray:
    """(1, 3, H', W') float -> (height, width, 3) uint8, cropped to the original size. One float
    temporary (the rest in place): a 24 MP image's is 288 MB. Channels-last input is copied once."""
    x = x_hat[0, :, :height, :width].clamp(0, 1).mul_(255).round_().to(torch.uint8)
    return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())


def assemble(mode: str, colour: np.ndarray, alpha: np.ndarray | None):
    """Decoded colour (+ alpha) -> PIL image in the original mode."""
    from PIL import Image

    rgb = Image.fromarray(colour, "RGB")
    if mode == "RGB":
        return rgb
    if mode == "RGBA":
        rgb.putalpha(Image.fromarray(alpha, "L"))
        return rgb
    grey = rgb.convert("L")
    if mode == "LA":
        return Image.merge("LA", (grey, Image.fromarray(alpha, "L")))
    return grey


def assemble_array(mode: str, colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Decoded colour (+ alpha) -> uint8 array in the original mode: (H, W) for L, else (H, W, C); the
    same pixels as assemble()."""
    if mode == "RGB":
        return colour
    if mode == "RGBA":
        return np.dstack([colour, alpha])
    return np.array(assemble(mode, colour, alpha))  # Pillow's own RGB -> L weights and rounding


def encode_alpha(alpha: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    from PIL import Image

    from .errors import DecodeError

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            # Checked before the pixels load: a small PNG may declare a huge plane.
            if img.size != (width, height) or img.mode != "L":
                raise DecodeError("alpha stream does not match the image size")
            return np.asarray(img)
    except DecodeError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged data
        raise DecodeError(f"alpha stream is corrupt: {exc}") from exc
