"""Where the time goes: compress and decompress broken into stages, per backend, with peak memory.

    python -m bench.speed --image kodim23.png [--repeats 3] [--json out.json]
        [--cli-sizes 6000x4000] [--against /tmp/old] [--skip-stages]

First, side by side in one run: the `aecodec` command (compress, decompress; a fresh process each,
as users run it) against `python -c "import torch"`, as wall-time ratios, with each one's peak RSS;
--against DIR times another checkout's command on the same files (an older commit, built in place),
and --cli-sizes adds resized copies of the image. Then the API with the model loaded: encode + decode
of the image, against AVIF (Pillow) and JPEG XL (imagecodecs) at the settings nearest its bpp.

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
ROOT = Path(__file__).resolve().parents[1]


def timed_process(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one run of cmd, which must succeed."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(os.environ, PYTHONPATH=str(cwd)), stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def cli_runs(sources: dict[str, Path], checkouts: dict[str, Path], repeats: int, quality: float, tmp: Path) -> dict:
    """Median wall time and peak RSS of `python -c "import torch"` and of each checkout's CLI compress and
    decompress of each source, interleaved round by round so load on the machine hits all alike."""
    times: dict[str, list] = {}

    def record(key, cmd, cwd):
        times.setdefault(key, []).append(timed_process(cmd, cwd))

    for _ in range(repeats):
        record("import torch", [sys.executable, "-c", "import torch"], ROOT)
        for size, png in sources.items():
            for label, checkout in checkouts.items():
                aec, out = tmp / f"{label}-{size}.aec", tmp / f"{label}-{size}.png"
                cli = [sys.executable, "-m", "aecodec.cli"]
                record(f"{size} | {label} | compress", [*cli, "compress", str(png), str(aec), "-Q", str(quality), "-f", "-q"], checkout)
                record(f"{size} | {label} | decompress", [*cli, "decompress", str(aec), str(out), "-f", "-q"], checkout)
    torch_s = statistics.median(t for t, _ in times["import torch"])
    return {key: {"wall_s": statistics.median(t for t, _ in runs), "vs_import_torch": statistics.median(t for t, _ in runs) / torch_s,
                  "peak_rss_mb": max(m for _, m in runs)} for key, runs in times.items()}


def api_and_peers(png: Path, quality: float, repeats: int, model_name: str | None = None) -> dict:
    """Seconds (median) to encode and decode the image with aecodec's API (model loaded, warm), and with
    AVIF and JPEG XL at their settings nearest aecodec's bpp."""
    import numpy as np
    from PIL import Image

    import aecodec
    from bench.rd import codec_table

    rgb = np.asarray(Image.open(png).convert("RGB"))
    model = aecodec.load_model(model_name)
    codecs = {"aecodec": (lambda a, q: aecodec.encode(a, q, weights=model),
                          lambda d: aecodec.decode(d, weights=model, output="numpy"), quality)}
    target_bytes = len(codecs["aecodec"][0](rgb, quality))
    for name in ("avif", "jxl"):
        _, settings, _, factory = codec_table()[name]
        encode, decode = factory()
        nearest = min(settings, key=lambda s: abs(len(encode(rgb, s)) - target_bytes))
        codecs[name] = (encode, decode, nearest)
    codecs.update(compressai_hyperprior(rgb))
    results = {}
    for name, (encode, decode, setting) in codecs.items():
        enc, dec = [], []
        for _ in range(repeats + 1):  # the first run warms up
            start = time.perf_counter()
            data = encode(rgb, setting)
            middle = time.perf_counter()
            decode(data)
            enc.append(middle - start)
            dec.append(time.perf_counter() - middle)
        size = len(data) if isinstance(data, bytes) else sum(len(b) for strings in data["strings"] for b in strings)
        results[name] = {"setting": setting, "bpp": 8 * size / (rgb.shape[0] * rgb.shape[1]),
                         "encode_s": statistics.median(enc[1:]), "decode_s": statistics.median(dec[1:])}
    return results


def compressai_hyperprior(rgb) -> dict:
    """compressai's bmshj2018-hyperprior (N=128, M=192) as a peer, when the train extra is installed.
    Its weights are untrained (the zoo's need a download): the transforms and the coder do the same work
    whatever the weights, so only its times mean anything, not its bpp."""
    try:
        import torch
        from compressai.zoo import bmshj2018_hyperprior
    except ImportError:
        return {}
    net = bmshj2018_hyperprior(quality=5, pretrained=False).eval()
    net.update(force=True)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    pad_h, pad_w = -rgb.shape[0] % 64, -rgb.shape[1] % 64

    def encode(array, _setting):
        with torch.inference_mode():
            return net.compress(torch.nn.functional.pad(x, (0, pad_w, 0, pad_h)))

    def decode(out):
        with torch.inference_mode():
            x_hat = net.decompress(out["strings"], out["shape"])["x_hat"][..., :rgb.shape[0], :rgb.shape[1]]
            return (x_hat[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    return {"compressai bmshj2018-hyperprior (untrained)": (encode, decode, 5)}


def worker(op: str, src: str, dst: str, backend: str, device: str, quality: float, repeats: int, model_name: str | None) -> dict:
    import torch
    from PIL import Image

    import aecodec
    from aecodec.api import record_stages
    from aecodec.cli import PNG_LEVEL

    model = aecodec.load_model(model_name)
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
                image.save(dst, compress_level=PNG_LEVEL)  # as the CLI writes it
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
    parser.add_argument("--model", help="released model (or weights file) for the API and stage timings (default: the "
                        "default model; the CLI runs always use it)")
    parser.add_argument("--sizes", default="3840x2160", help="comma-separated WxH resizes of the image to time too "
                        "(e.g. 3840x2160,6000x4000); the image's own size always runs")
    parser.add_argument("--backends", default="python,C++,CUDA", help="subset of python,C++,CUDA")
    parser.add_argument("--cli-sizes", default="", help="WxH resizes to run the CLI comparison on too (e.g. 6000x4000)")
    parser.add_argument("--against", help="another checkout (e.g. an older commit, extension built in place) whose "
                        "CLI runs beside this one's")
    parser.add_argument("--skip-stages", action="store_true", help="only the CLI and API comparisons")
    parser.add_argument("--worker", nargs=6, metavar=("OP", "SRC", "DST", "BACKEND", "DEVICE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        op, src, dst, backend, device, out = args.worker
        Path(out).write_text(json.dumps(worker(op, src, dst, backend, device, args.quality, args.repeats, args.model)))
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
            for size in {*filter(None, args.sizes.split(",")), *filter(None, args.cli_sizes.split(","))}:
                width, height = (int(v) for v in size.split("x"))
                sources[size] = Path(tmp) / f"image{size}.png"
                rgb.resize((width, height), Image.LANCZOS).save(sources[size])
        own = next(iter(sources))
        checkouts = {"this": ROOT, **({"against": Path(args.against).resolve()} if args.against else {})}
        cli_sources = {size: png for size, png in sources.items() if size == own or size in args.cli_sizes.split(",")}
        results["cli"] = cli_runs(cli_sources, checkouts, args.repeats, args.quality, Path(tmp))
        # Stage workers before the API peers load models here: a child's peak RSS counts the memory
        # of the parent it was forked from (Linux keeps the high-water mark across exec).
        if not args.skip_stages:
            results["stages"] = stage_runs(args, sources, backends, Path(tmp))
        results["api"] = api_and_peers(sources[own], args.quality, args.repeats, args.model)
        print_cli_and_api(results, checkouts)
        if not args.skip_stages:
            print_stages(args, results["stages"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


def stage_runs(args, sources: dict, backends: list, tmp: Path) -> dict:
    results = {}
    for size, png in sources.items():
        if size not in args.sizes.split(",") and size != next(iter(sources)):
            continue
        for label, backend, device in backends:
            for op in ("compress", "decompress"):
                src = png if op == "compress" else tmp / f"{png.stem}.aec"
                dst = tmp / (f"{png.stem}.aec" if op == "compress" else "decoded.png")
                out = tmp / "result.json"
                env = dict(os.environ, AECODEC_BACKEND="python" if backend == "python" else "")
                cmd = [sys.executable, "-m", "bench.speed", "--image", args.image, "--quality", str(args.quality),
                       "--repeats", str(args.repeats), *(["--model", args.model] if args.model else []), "--worker", op, str(src), str(dst), backend, device, str(out)]
                subprocess.run(cmd, check=True, env=env, cwd=ROOT)
                results[f"{size} | {label} | {op}"] = json.loads(out.read_text())
                print(f"{size} {label} {op}: {results[f'{size} | {label} | {op}']['total']:.3f} s", flush=True)
    return results


def print_cli_and_api(results: dict, checkouts: dict) -> None:
    import aecodec

    cli = results["cli"]
    print(f"\naecodec {aecodec.__version__}, {os.cpu_count()} CPUs; CLI: median wall time of fresh processes, "
          f"`import torch` took {cli['import torch']['wall_s']:.2f} s (peak RSS {cli['import torch']['peak_rss_mb']:.0f} MB)\n")
    print("| image | checkout | command | wall s | x import torch | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for key, r in cli.items():
        if key != "import torch":
            size, label, op = key.split(" | ")
            where = "this" if label == "this" else str(checkouts[label])
            print(f"| {size} | {where} | {op} | {r['wall_s']:.2f} | {r['vs_import_torch']:.2f} | {r['peak_rss_mb']:.0f} |")
    api = results["api"]
    ours = api["aecodec"]
    print("\nAPI, model loaded, median: encode + decode of the image (ratios: the codec's time / aecodec's)\n")
    print("| codec | setting | bpp | encode ms | decode ms | encode + decode ms | encode x | decode x |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in api.items():
        print(f"| {name} | {r['setting']:g} | {r['bpp']:.3f} | {1000 * r['encode_s']:.1f} | {1000 * r['decode_s']:.1f} | "
              f"{1000 * (r['encode_s'] + r['decode_s']):.1f} | {r['encode_s'] / ours['encode_s']:.2f} | "
              f"{r['decode_s'] / ours['decode_s']:.2f} |")


def print_stages(args, results: dict) -> None:
    import aecodec

    print(f"\naecodec {aecodec.__version__}, quality {args.quality:g}, {os.cpu_count()} CPUs, median of {args.repeats}\n")
    print("| image | backend | operation | total s | network | entropy | image | container | file I/O | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        size, label, op = key.split(" | ")
        cells = [f"{r['total']:.3f}"] + [f"{r[k]:.3f} ({100 * r[k] / r['total']:.0f}%)" for k in ("network", "entropy", "image", "container", "io")]
        print(f"| {size} | {label} | {op} | " + " | ".join(cells) + f" | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
