"""aecodec: a learned image codec with a real file format.

    >>> import aecodec
    >>> data = aecodec.encode("photo.png", quality=6)
    >>> image = aecodec.decode(data)   # PIL.Image
"""

from ._native import HAS_CUDA, HAS_EXT, backend_name
from . import pillow_plugin  # noqa: F401  (registers .aec with Pillow)
from .api import DEFAULT_QUALITY, decode, encode, info
from .errors import AecError, DecodeError, ImageError, WeightsError
from .model import QUALITY_MAX, QUALITY_MIN
from .weights import load as load_model

__version__ = "0.1.0"

__all__ = [
    "encode", "decode", "info", "load_model", "backend_name", "HAS_EXT", "HAS_CUDA",
    "AecError", "DecodeError", "ImageError", "WeightsError",
    "DEFAULT_QUALITY", "QUALITY_MIN", "QUALITY_MAX", "__version__",
]
