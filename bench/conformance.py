"""Write conformance files: python -m bench.conformance --model NAME | --lossless.

--model: run once, when a model is released (docs/FORMAT.md, "Conformance files"): it writes
tests/data/conformance/NAME/ with a handful of small .aec files (RGB, RGBA, L, LA, an odd size, the
lowest and highest quality, refined qualities), the pixels each decodes to (PNG) and manifest.json. The test
suite then checks that every later aecodec decodes them to those pixels (within 1 level: the synthesis is float).
--model NAME --append: add the cases its folder lacks (a new coding, such as the refinement layer of 0.14.0),
leaving the files it has as they are.
--lossless: the lossless coding's files, tests/data/conformance/lossless/NAME.aec and the pixels each
must decode to exactly (NAME.npy), one per mode; written by aecodec 0.2.0.
Never regenerate files a release already shipped: they are what its users have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec
from aecodec.format import unpack

ROOT = Path(__file__).resolve().parent.parent / "tests" / "data" / "conformance"
LOSSLESS = "lossless"  # ROOT's folder of lossless files (a model's folder is named after the model)

# name, mode, width, height, quality
CASES = [
    ("rgb_lowest", "RGB", 96, 64, 1.0),
    ("rgb_highest", "RGB", 96, 64, 10.0),
    ("rgb_odd_size", "RGB", 37, 29, 6.0),
    ("rgba", "RGBA", 64, 48, 5.5),
    ("l", "L", 50, 70, 4.0),
    ("la", "LA", 40, 40, 3.25),
    ("rgb_several_lanes", "RGB", 384, 256, 9.0),  # a y stream of more than one rANS lane
    # Refined (format version 3, from aecodec 0.14.0): the learned file at quality 7 plus a refinement layer
    ("rgb_refined", "RGB", 45, 35, 9.5),
    ("la_refined", "LA", 40, 24, 8.0),
    ("rgb_refined_finest", "RGB", 64, 48, 12.0),
]


def test_pattern(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth gradients, soft blobs, a hard-edged shape and texture: (H, W, 4) uint8, alpha a soft disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 4))
    for c in range(3):
        img[..., c] = 0.25 + 0.4 * xx / width + 0.3 * yy / height * (c - 1)
        for _ in range(5):
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.4) * max(height, width)
            img[..., c] += rng.uniform(-0.3, 0.3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    box = (abs(yy - height / 2) < height / 5) & (abs(xx - width / 3) < width / 6)
    img[box, :3] = rng.uniform(0, 1, 3)
    img[..., :3] += rng.normal(0, 0.03, (height, width, 3))
    img[..., 3] = np.clip(1.5 - np.hypot(yy - height / 2, xx - width / 2) / (0.35 * max(height, width)), 0, 1)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def lossless_images() -> dict[str, np.ndarray]:
    """Name -> pixels: every lossless mode, with flat areas, edges, noise and (for alpha) fully transparent colour."""
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


def write_lossless(out: Path) -> None:
    """NAME.aec and NAME.npy for each of lossless_images(): only decoding is pinned, since the .aec
    bytes depend on the libwebp/zlib that wrote them."""
    for name, pixels in lossless_images().items():
        (out / f"{name}.aec").write_bytes(aecodec.encode(pixels, lossless=True))
        np.save(out / f"{name}.npy", pixels)
    print(f"wrote {len(lossless_images())} lossless files to {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a released model's name")
    which.add_argument("--lossless", action="store_true", help="the lossless coding's files")
    parser.add_argument("--force", action="store_true", help="replace existing files (only before the release)")
    parser.add_argument("--append", action="store_true", help="with --model: write only the cases its folder lacks")
    args = parser.parse_args(argv)
    out = ROOT / (LOSSLESS if args.lossless else args.model)
    if out.exists() and not (args.force or args.append and args.model):
        raise SystemExit(f"{out} exists: conformance files a release shipped are never regenerated")
    out.mkdir(parents=True, exist_ok=True)
    if args.lossless:
        write_lossless(out)
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(aecodec.__file__).parent).stdout.strip()
    written_by = f"aecodec {aecodec.__version__} ({commit})"
    manifest = {"model": args.model, "written_by": written_by, "files": []}
    if args.append and (out / "manifest.json").exists():
        manifest = json.loads((out / "manifest.json").read_text())
    have = {entry["file"] for entry in manifest["files"]}
    added = 0
    for seed, (name, mode, width, height, quality) in enumerate(CASES):
        if f"{name}.aec" in have:
            continue
        rgba = test_pattern(height, width, seed)
        source = Image.fromarray(rgba, "RGBA").convert(mode) if mode != "RGBA" else Image.fromarray(rgba, "RGBA")
        data = aecodec.encode(source, quality=quality, mode="learned", weights=args.model)
        decoded = aecodec.decode(data, precision="float32")  # the reference precision the tests decode at
        (out / f"{name}.aec").write_bytes(data)
        decoded.save(out / f"{name}.png")
        header, _ = unpack(data)
        manifest["files"].append({
            "file": f"{name}.aec", "expected": f"{name}.png", "mode": mode, "width": width, "height": height,
            "quality": quality, "model_id": header.model_id.hex(), "symbols_crc": header.symbols_crc,
            "sha256": hashlib.sha256(data).hexdigest(),
            **({"written_by": written_by} if manifest["written_by"] != written_by else {}),
        })
        added += 1
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {added} files to {out}")


if __name__ == "__main__":
    main()
