"""Regenerate the lossless conformance files: python tests/data/conformance/lossless/make.py

Each NAME.aec is a small lossless .aec file and NAME.npy the pixels it must decode to, exactly
(tests/test_lossless.py::test_conformance). The pixels are drawn from a fixed seed; the .aec bytes
depend on the libwebp/zlib that wrote them, so only decoding is pinned, not re-encoding.
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def images() -> dict[str, np.ndarray]:
    """Name -> pixels: every mode, with flat areas, edges, noise and (for alpha) fully transparent colour."""
    rng = np.random.default_rng(2026)
    height, width = 12, 16
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (200, 30, 60)
    rgb[height // 2 :] = rng.integers(0, 256, (height - height // 2, width, 3))
    alpha = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    alpha[:, :3] = 0  # colour under alpha 0 must survive too
    grey16 = (rng.integers(0, 65536, (height, width)) & ~0xFF | np.arange(width)).astype(np.uint16)
    return {"L": rgb[:, :, 1], "LA": np.dstack([rgb[:, :, 1], alpha]), "RGB": rgb, "RGBA": np.dstack([rgb, alpha]),
            "I16": grey16}


def main() -> None:
    import aecodec

    for name, pixels in images().items():
        (HERE / f"{name}.aec").write_bytes(aecodec.encode(pixels, lossless=True))
        np.save(HERE / f"{name}.npy", pixels)
        print(f"wrote {name}.aec, {name}.npy")


if __name__ == "__main__":
    main()
