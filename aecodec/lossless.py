"""Lossless coding: the image stored exactly, as WebP lossless (8-bit images up to 16383 px a side) or
PNG (16-bit grey, larger images), both through Pillow. Spec: docs/FORMAT.md, "Lossless files"."""

from __future__ import annotations

import io

import numpy as np

from .errors import DecodeError, ImageError
from .image import Picture

WEBP_MAX_SIDE = 16383  # the WebP format's limit


def _payload_image(picture: Picture):
    """The PIL image the payload stores: grey as RGB(A) for WebP, which has no grey mode."""
    from PIL import Image

    if picture.lost:
        raise ImageError(f"cannot store this image losslessly: {picture.lost}")
    if picture.grey16 is not None:
        return Image.fromarray(picture.grey16), "png"
    coding = "webp" if max(picture.width, picture.height) <= WEBP_MAX_SIDE else "png"
    if coding == "png" and picture.mode in ("L", "LA"):
        planes = [picture.colour[:, :, 0]] + ([picture.alpha] if picture.alpha is not None else [])
    else:
        planes = [picture.colour] + ([picture.alpha[:, :, None]] if picture.alpha is not None else [])
    array = np.dstack(planes) if len(planes) > 1 else planes[0]
    return Image.fromarray(array), coding


def encode(picture: Picture, fast: bool = False) -> tuple[str, bytes]:
    """(coding, payload). fast: WebP's lowest effort (for a size estimate; files use Pillow's default effort)."""
    img, coding = _payload_image(picture)
    buf = io.BytesIO()
    if coding == "webp":
        # exact: keep the colour under fully transparent pixels, which WebP otherwise may change.
        effort = {"method": 0, "quality": 0} if fast else {}
        img.save(buf, format="WEBP", lossless=True, exact=True, **effort)
    else:
        img.save(buf, format="PNG", compress_level=1 if fast else 9)
    return coding, buf.getvalue()


def decode(mode: str, coding: str, width: int, height: int, payload: bytes):
    """A lossless file's payload -> PIL image in `mode`; DecodeError for anything that does not match the header."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(payload), formats=[coding.upper()]) as img:
            if img.size != (width, height):  # checked before the pixels load: a small payload may declare a huge image
                raise DecodeError(f"lossless payload is a {img.width}x{img.height} image, its header says {width}x{height}")
            img.load()
            stored = img.mode
            array = np.asarray(img)
    except DecodeError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged data
        raise DecodeError(f"lossless payload is corrupt: {exc}") from exc
    expected = {"L": ("RGB", "L"), "LA": ("RGBA", "LA"), "RGB": ("RGB",) * 2, "RGBA": ("RGBA",) * 2,
                "I;16": ("I;16",) * 2}[mode][coding == "png"]
    if stored != expected or array.shape[:2] != (height, width):
        raise DecodeError(f"lossless payload is a {img.width}x{img.height} {stored} image, "
                          f"its header says {width}x{height} {mode}")
    if stored == mode:
        return Image.fromarray(array)
    grey, colour = array[:, :, 0], array[:, :, :3]
    if not (colour == grey[:, :, None]).all():
        raise DecodeError("lossless payload of a grey image holds colour")
    return Image.fromarray(grey if mode == "L" else np.dstack([grey, array[:, :, 3]]))
