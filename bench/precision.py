"""PSNR cost of the bf16 synthesis: the same files decoded in float32 and in bf16.

    python -m bench.precision --images DIR [--limit 24] [--qualities 2,6,10]

Only g_s's precision differs (the entropy decoding is exact either way), so the difference is the
pixels' alone. PSNR is of the 8-bit RGB decode against the original, averaged over images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--qualities", default="2,6,10")
    args = parser.parse_args(argv)
    model = aecodec.load_model()
    paths = sorted(Path(args.images).glob("*.png"))[: args.limit]
    print("| quality | PSNR float32 | PSNR bf16 | bf16 - float32 dB (mean) | worst image | g_s+decode s float32 | bf16 |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for quality in map(float, args.qualities.split(",")):
        rows = []
        for path in paths:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            data = aecodec.encode(rgb, quality, weights=model)
            row = {}
            for precision in ("float32", "bf16"):
                start = time.perf_counter()
                decoded = aecodec.decode(data, weights=model, precision=precision, output="numpy")
                row[precision] = (psnr(decoded, rgb), time.perf_counter() - start)
            rows.append((path.stem, row))
        deltas = [row["bf16"][0] - row["float32"][0] for _, row in rows]
        worst = int(np.argmin(deltas))
        mean = {p: float(np.mean([row[p][0] for _, row in rows])) for p in ("float32", "bf16")}
        seconds = {p: float(np.sum([row[p][1] for _, row in rows])) for p in ("float32", "bf16")}
        results[quality] = {"psnr": mean, "delta_db": float(np.mean(deltas)), "worst": (rows[worst][0], deltas[worst]),
                            "seconds": seconds}
        print(f"| {quality:g} | {mean['float32']:.3f} | {mean['bf16']:.3f} | {np.mean(deltas):+.4f} | "
              f"{rows[worst][0]} {deltas[worst]:+.4f} | {seconds['float32']:.1f} | {seconds['bf16']:.1f} |", flush=True)
    return results


if __name__ == "__main__":
    main()
