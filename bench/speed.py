"""Where the time goes: compress and decompress broken into stages, per backend, with peak memory.

    python -m bench.speed --image kodim23.png [--repeats 3] [--json out.json]

Sizes: the image as given, and the same image resized to each --sizes (default 3840x2160). Backends: the
pure-Python coder, the C++ coder, and CUDA (transforms on the GPU, native coder) when a GPU is
usable. Each (size, backend, operation) runs in a fresh process so its peak RSS is its own.
Stages: image (convert/pad or crop/assemble), network (g_a + h_a, or g_s), entropy (quantize,
integer hyper-synthesis, rANS), container, and file I/O (read/write .aec, read PNG / write PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("io", "image", "network", "entropy", "container")


def worker(op: str, src: str, dst: str, backend: str, device: str, quality: float, repeats: int) -> dict:
    import torch
    from PIL import Image

    import aecodec
    from aecodec.api import record_stages

    model = aecodec.load_model()
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = []
    for _ in range(repeats + 1):  # the first run warms up
        with record_stages() as stages:
            start = time.perf_counter()
            if op == "compress":
                t = time.perf_counter()
                with Image.open(src) as img:
                    img.load()
                io_s = time.perf_counter() - t
                data = aecodec.encode(img, quality, weights=model, backend=backend, device=device)
                t = time.perf_counter()
                Path(dst).write_bytes(data)
            else:
                t = time.perf_counter()
                data = Path(src).read_bytes()
                io_s = time.perf_counter() - t
                image = aecodec.decode(data, weights=model, backend=backend, device=device)
                t = time.perf_counter()
                image.save(dst)
            stages["io"] = io_s + time.perf_counter() - t
            stages["total"] = time.perf_counter() - start
        runs.append(dict(stages))
    result = {k: statistics.median(r.get(k, 0.0) for r in runs[1:]) for k in (*STAGES, "total")}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["baseline_rss_mb"] = baseline_kb / 1024
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--quality", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--sizes", default="3840x2160", help="comma-separated WxH resizes of the image to time too "
                        "(e.g. 3840x2160,6000x4000); the image's own size always runs")
    parser.add_argument("--backends", default="python,C++,CUDA", help="subset of python,C++,CUDA")
    parser.add_argument("--worker", nargs=6, metavar=("OP", "SRC", "DST", "BACKEND", "DEVICE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        op, src, dst, backend, device, out = args.worker
        Path(out).write_text(json.dumps(worker(op, src, dst, backend, device, args.quality, args.repeats)))
        return {}

    from PIL import Image

    import aecodec
    from aecodec import _native

    backends = [("python", "python", "cpu")]
    if _native.HAS_EXT:
        backends.append(("C++", "native", "cpu"))
    if _native.cuda_usable():
        backends.append(("CUDA", "native", "cuda"))
    backends = [b for b in backends if b[0] in args.backends.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        with Image.open(args.image) as img:
            rgb = img.convert("RGB")
            sources[f"{rgb.width}x{rgb.height}"] = Path(tmp) / "image.png"
            rgb.save(sources[f"{rgb.width}x{rgb.height}"])
            for size in filter(None, args.sizes.split(",")):
                width, height = (int(v) for v in size.split("x"))
                sources[size] = Path(tmp) / f"image{size}.png"
                rgb.resize((width, height), Image.LANCZOS).save(sources[size])
        for size, png in sources.items():
            for label, backend, device in backends:
                for op in ("compress", "decompress"):
                    src = png if op == "compress" else Path(tmp) / f"{png.stem}.aec"
                    dst = Path(tmp) / (f"{png.stem}.aec" if op == "compress" else "decoded.png")
                    out = Path(tmp) / "result.json"
                    env = dict(os.environ, AECODEC_BACKEND="python" if backend == "python" else "")
                    cmd = [sys.executable, "-m", "bench.speed", "--image", args.image, "--quality", str(args.quality),
                           "--repeats", str(args.repeats), "--worker", op, str(src), str(dst), backend, device, str(out)]
                    subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).parents[1])
                    results[f"{size} | {label} | {op}"] = json.loads(out.read_text())
                    print(f"{size} {label} {op}: {results[f'{size} | {label} | {op}']['total']:.3f} s", flush=True)

    print(f"\naecodec {aecodec.__version__}, quality {args.quality:g}, {os.cpu_count()} CPUs, median of {args.repeats}\n")
    print("| image | backend | operation | total s | network | entropy | image | container | file I/O | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        size, label, op = key.split(" | ")
        cells = [f"{r['total']:.3f}"] + [f"{r[k]:.3f} ({100 * r[k] / r['total']:.0f}%)" for k in ("network", "entropy", "image", "container", "io")]
        print(f"| {size} | {label} | {op} | " + " | ".join(cells) + f" | {r['peak_rss_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
