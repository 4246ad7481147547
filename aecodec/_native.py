"""The one place that loads the compiled extension (aecodec._C). Importing aecodec never fails for it.

AECODEC_BACKEND=python forces the pure-Python coder; otherwise the extension is used when it loads.
"""

from __future__ import annotations

import os

try:
    if os.environ.get("AECODEC_BACKEND", "").lower() == "python":
        raise ImportError("AECODEC_BACKEND=python")
    import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

    from . import _C  # type: ignore[attr-defined]

    IMPORT_ERROR = None
except ImportError as exc:  # missing, stale or ABI-mismatched build: fall back, but remember why
    _C = None
    IMPORT_ERROR = str(exc)

HAS_EXT = _C is not None
HAS_CUDA = bool(HAS_EXT and _C.has_cuda())


def cuda_usable() -> bool:
    if not HAS_CUDA:
        return False
    import torch

    return torch.cuda.is_available()


def backend_name() -> str:
    """'cuda', 'cpu' (native C++) or 'python': what encode/decode will use on this machine."""
    if cuda_usable():
        return "cuda"
    return "cpu" if HAS_EXT else "python"
