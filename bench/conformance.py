"""Write the conformance files of a released model: python -m bench.conformance --model NAME.

Run once, when a model is released (docs/FORMAT.md, "Conformance files"): it writes
tests/data/conformance/NAME/ with a handful of small .aec files (RGB, RGBA, L, LA, an odd size, the
lowest and highest quality), the pixels each decodes to (PNG) and manifest.json. The test suite then
checks that every later aecodec decodes them to those pixels (within 1 level: the synthesis is float).
Never regenerate the files of a model that was already released: they are what its users have.
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

# name, mode, width, height, quality
CASES = [
    ("rgb_lowest", "RGB", 96, 64, 1.0),
    ("rgb_highest", "RGB", 96, 64, 10.0),
    ("rgb_odd_size", "RGB", 37, 29, 6.0),
    ("rgba", "RGBA", 64, 48, 5.5),
    ("l", "L", 50, 70, 4.0),
    ("la", "LA", 40, 40, 3.25),
    ("rgb_several_lanes", "RGB", 384, 256, 9.0),  # a y stream of more than one rANS lane
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a released model's name")
    parser.add_argument("--force", action="store_true", help="replace existing files (only before the release)")
    args = parser.parse_args(argv)
    out = ROOT / args.model
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists: conformance files of a released model are never regenerated")
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(aecodec.__file__).parent).stdout.strip()
    manifest = {"model": args.model, "written_by": f"aecodec {aecodec.__version__} ({commit})", "files": []}
    for seed, (name, mode, width, height, quality) in enumerate(CASES):
        rgba = test_pattern(height, width, seed)
        source = Image.fromarray(rgba, "RGBA").convert(mode) if mode != "RGBA" else Image.fromarray(rgba, "RGBA")
        data = aecodec.encode(source, quality=quality, weights=args.model)
        decoded = aecodec.decode(data)
        (out / f"{name}.aec").write_bytes(data)
        decoded.save(out / f"{name}.png")
        header, _ = unpack(data)
        manifest["files"].append({
            "file": f"{name}.aec", "expected": f"{name}.png", "mode": mode, "width": width, "height": height,
            "quality": quality, "model_id": header.model_id.hex(), "symbols_crc": header.symbols_crc,
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(CASES)} files to {out}")


if __name__ == "__main__":
    main()
