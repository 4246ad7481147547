"""aecodec: a learned image codec with a real file format.

    >>> import aecodec
    >>> data = aecodec.encode("photo.png", quality=6)
    >>> image = aecodec.decode(data)   # PIL.Image
"""

import importlib

from . import pillow_plugin  # noqa: F401  (registers .aec with Pillow)
from .errors import AecError, DecodeError, ImageError, OptionError, WeightsError
from .format import info
from .quality import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN

__version__ = "0.14.0"

# These pull in torch (seconds): imported on first use, so `import aecodec`, the
# Pillow plugin's registration and `aecodec info`/`--help` stay fast.
_LAZY = {
    "encode": ("api", "encode"), "decode": ("api", "decode"), "load_model": ("weights", "load"),
    "backend_name": ("_native", "backend_name"), "HAS_EXT": ("_native", "HAS_EXT"), "HAS_CUDA": ("_native", "HAS_CUDA"),
}

__all__ = [
    "encode", "decode", "info", "load_model", "backend_name", "HAS_EXT", "HAS_CUDA",
    "AecError", "DecodeError", "ImageError", "OptionError", "WeightsError",
    "DEFAULT_QUALITY", "QUALITY_MIN", "QUALITY_MAX", "__version__",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'aecodec' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
