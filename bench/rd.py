"""Rate-distortion benchmark: aecodec against JPEG, WebP, AVIF and JPEG XL on any folder of images.

    python -m bench.rd --images DIR [--out bench/results/NAME] [--codecs aecodec,jpeg420,...]

Scoring follows the usual Kodak conventions (see bench/data/published_kodak.json's source): bpp from
the whole file, RGB PSNR and MS-SSIM of the 8-bit decoded image per image, then averaged over images
at each codec setting. Writes results.json (every image and setting), summary.csv (averages),
bd.md (BD-rates against JPEG 4:2:0 and every other codec) and rd.png. Per-image results are cached
under OUT/cache keyed by the image's hash and the codec version, so a re-run only does what changed.
On Kodak (kodim01..24 in the folder) the plot also shows published CompressAI and VTM points.

    python -m bench.rd --synthetic [--images DIR]

instead scores aecodec's default (auto coding, default quality) image by image on bench.synthetic's
drawings (and on DIR's photos, which must stay byte-identical to the learned path) against WebP at
quality 80, WebP lossless and PNG, and writes OUT/table.md (default bench/results/synthetic).

    python -m bench.rd --images DIR --effort 1,2,3 [--crop 256] [--qualities 2,4,6,8] [--limit N]

instead compares aecodec's encoder effort levels: each level's PSNR BD-rate against effort 0 and
its encode and decode time as a ratio of effort 0's, every level run side by side on each image and
quality (centre crops of --crop pixels, so it fits a small CPU), each time the least of TIMING_RUNS
runs (encodes over REPEAT_BELOW_S seconds, effort 3's: one); writes effort.json and effort.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .bd import bd_rate

PUBLISHED = Path(__file__).parent / "data" / "published_kodak.json"
PUBLISHED_SHOWN = ("VTM", "bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean")
IMAGE_SUFFIXES = {".png", ".ppm", ".bmp", ".tif", ".tiff"}


def _pillow_codec(fmt: str, **options):
    def encode(rgb: np.ndarray, quality) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, quality=int(quality), **options)
        return buf.getvalue()

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))

    return encode, decode


def _jxl_codec():
    import imagecodecs

    def encode(rgb, distance):
        return imagecodecs.jpegxl_encode(rgb, distance=float(distance))

    return encode, imagecodecs.jpegxl_decode


# The model aecodec runs (--weights; None: the default model). Results are cached under its id.
WEIGHTS: str | None = None


def _aecodec_codec():
    import aecodec

    model = aecodec.load_model(WEIGHTS)

    def encode(rgb, quality):
        return aecodec.encode(rgb, quality, mode="learned", weights=model)  # the model's curve, not auto's choice

    def decode(data):
        return np.asarray(aecodec.decode(data, weights=model))

    return encode, decode


def codec_table() -> dict:
    """name -> (label, settings, version string, factory); settings sweep low to high rate."""
    import PIL

    pil = f"Pillow {PIL.__version__}"
    q = list(range(5, 100, 10))
    table = {
        "aecodec": ("aecodec", [1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 7.5, 8, 9, 10, 11, 12], None, _aecodec_codec),
        "jpeg420": ("JPEG 4:2:0", list(range(5, 100, 5)), pil,
                    lambda: _pillow_codec("JPEG", subsampling=2, optimize=False, progressive=False)),
        "jpeg444": ("JPEG 4:4:4", list(range(5, 100, 5)), pil,
                    lambda: _pillow_codec("JPEG", subsampling=0, optimize=False, progressive=False)),
        "webp": ("WebP", q, pil, lambda: _pillow_codec("WEBP")),
        "avif": ("AVIF", q, pil, lambda: _pillow_codec("AVIF")),
        "jxl": ("JPEG XL", [12, 8, 6, 4, 3, 2, 1.5, 1, 0.7, 0.5], None, _jxl_codec),
    }
    return table


def codec_version(name: str) -> str:
    if name == "aecodec":
        import aecodec

        return f"aecodec {aecodec.__version__} model {aecodec.load_model(WEIGHTS).id_hex}"
    if name == "jxl":
        import imagecodecs

        return f"imagecodecs {imagecodecs.__version__}"
    return codec_table()[name][2]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """RGB MS-SSIM (pytorch-msssim); NaN below 161 px, where its five scales do not fit."""
    if min(a.shape[:2]) < 161:
        return float("nan")
    import torch
    from pytorch_msssim import ms_ssim as msssim

    to = lambda x: torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float()  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster than 2 threads for these small convolutions
    try:
        return float(msssim(to(a), to(b), data_range=255))
    finally:
        torch.set_num_threads(threads)


# With runs > 1, encode and decode times are the least of that many runs (as timeit takes them: a noisy
# machine only ever adds time), but encodes longer than REPEAT_BELOW_S run once.
TIMING_RUNS = 3
REPEAT_BELOW_S = 5.0


def measure(encode, decode, rgb: np.ndarray, setting, runs: int = 1) -> dict:
    if runs < 1:
        raise ValueError(f"measure needs runs >= 1, got {runs}")
    enc_s = dec_s = math.inf
    for run in range(runs):
        if run == 0 or enc_s < REPEAT_BELOW_S:
            t0 = time.perf_counter()
            data = encode(rgb, setting)
            enc_s = min(enc_s, time.perf_counter() - t0)
        t1 = time.perf_counter()
        decoded = decode(data)
        dec_s = min(dec_s, time.perf_counter() - t1)
    h, w = rgb.shape[:2]
    return {"bpp": 8 * len(data) / (w * h), "psnr": psnr(rgb, decoded), "ms_ssim": ms_ssim(rgb, decoded),
            "enc_s": enc_s, "dec_s": dec_s}


def run(images: list[Path], codecs: list[str], out: Path) -> dict:
    from tqdm import tqdm

    table = codec_table()
    cache_dir = out / "cache"
    results = {}
    jobs = [(name, path) for name in codecs for path in images]
    factories = {}
    for name, path in tqdm(jobs, desc="rd", unit="image x codec"):
        label, settings, _, factory = table[name]
        version = codec_version(name)
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        key = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()[:16]
        cache = cache_dir / f"{path.stem}-{key}" / f"{name}.json"
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        if cached.get("version") != version:
            cached = {"version": version, "points": {}}
        todo = [s for s in settings if str(s) not in cached["points"]]
        if todo:
            if name not in factories:
                factories[name] = factory()
            encode, decode = factories[name]
            for setting in todo:
                cached["points"][str(setting)] = measure(encode, decode, rgb, setting)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(cached, indent=1))
        results.setdefault(name, {"label": label, "version": version, "images": {}})
        results[name]["images"][path.name] = {s: cached["points"][str(s)] for s in settings}
    return results


def summarize(results: dict) -> dict:
    """Per codec: each setting's metrics averaged over images (PSNR per image, then averaged)."""
    summary = {}
    for name, res in results.items():
        per_image = list(res["images"].values())
        settings = list(per_image[0].keys())
        curve = {k: [] for k in ("setting", "bpp", "psnr", "ms_ssim", "enc_s", "dec_s")}
        for s in settings:
            curve["setting"].append(s)
            for k in ("bpp", "psnr", "ms_ssim", "enc_s", "dec_s"):
                curve[k].append(float(np.mean([img[s][k] for img in per_image])))
        summary[name] = {"label": res["label"], "version": res["version"], **curve}
    return summary


def msssim_db(values) -> np.ndarray:
    return -10 * np.log10(1 - np.asarray(values, dtype=np.float64))


def bd_table(summary: dict) -> str:
    names = list(summary)
    lines = []
    for metric, convert in (("psnr", np.asarray), ("ms_ssim", msssim_db)):
        rows = []
        for test in names:
            cells = []
            for ref in names:
                a, b = summary[ref], summary[test]
                if ref == test or any(math.isnan(v) for v in a[metric] + b[metric]):
                    cells.append("—")
                    continue
                cubic = bd_rate(a["bpp"], convert(a[metric]), b["bpp"], convert(b[metric]), "cubic")
                pchip = bd_rate(a["bpp"], convert(a[metric]), b["bpp"], convert(b[metric]), "pchip")
                cells.append(f"{cubic:+.1f} ({pchip:+.1f})")
            rows.append(f"| {summary[test]['label']} | " + " | ".join(cells) + " |")
        header = "| codec \\ vs | " + " | ".join(summary[n]["label"] for n in names) + " |"
        what = "PSNR (RGB)" if metric == "psnr" else "MS-SSIM (dB, -10 log10(1 - MS-SSIM))"
        lines += [f"### BD-rate, {what}: % bits vs the column codec, cubic (PCHIP)", "", header,
                  "|" + "---|" * (len(names) + 1), *rows, ""]
    return "\n".join(lines)


def plot(summary: dict, path: Path, published: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for name, curve in summary.items():
        style = dict(marker="o", linewidth=2.5, markersize=4) if name == "aecodec" else dict(marker=".", linewidth=1.2)
        axes[0].plot(curve["bpp"], curve["psnr"], label=curve["label"], **style)
        if not any(math.isnan(v) for v in curve["ms_ssim"]):
            axes[1].plot(curve["bpp"], msssim_db(curve["ms_ssim"]), label=curve["label"], **style)
    for name in PUBLISHED_SHOWN if published else ():
        data = published[name]
        label = f"{name} (published)"
        axes[0].plot(data["bpp"], data["psnr"], linestyle="--", marker="x", markersize=3, linewidth=1, label=label)
        if "ms-ssim" in data:
            axes[1].plot(data["bpp"], msssim_db(data["ms-ssim"]), linestyle="--", marker="x", markersize=3, linewidth=1, label=label)
    for ax, ylabel in zip(axes, ("RGB PSNR (dB)", "MS-SSIM (dB)")):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, 2.0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # the MS-SSIM axis is empty for images too small for MS-SSIM
            ax.legend(fontsize=8)
    axes[0].set_ylim(22, 42)
    axes[1].set_ylim(6, 24)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sizes_and_psnr(rgb: np.ndarray, fmt: str, **options) -> tuple[int, float]:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **options)
    with Image.open(buf) as img:
        return len(buf.getvalue()), psnr(rgb, np.asarray(img.convert("RGB")))


def _webp_within(rgb: np.ndarray, max_bytes: int) -> tuple[int, float] | None:
    """(bytes, PSNR) of the largest WebP (lossy, default effort) of at most max_bytes, by bisection on its
    quality 0..100; None when quality 0 does not fit."""
    best, low, high = None, 0, 100
    while low <= high:
        middle = (low + high) // 2
        size, quality = _sizes_and_psnr(rgb, "WEBP", quality=middle)
        if size <= max_bytes:
            best, low = (size, quality), middle + 1
        else:
            high = middle - 1
    return best


def synthetic_table(photos: list[Path], out: Path) -> list[dict]:
    """One row per image: aecodec's default file against WebP q80, WebP lossless and PNG (optimize), and
    the PSNR of the largest WebP no bigger than aecodec's file (how far WebP's curve is above the model's)."""
    import aecodec

    from .synthetic import SYNTHETIC

    model = aecodec.load_model(WEIGHTS)
    sources = [(name, draw()) for name, draw in SYNTHETIC.items()]
    sources += [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in photos]
    rows = []
    for name, rgb in sources:
        start = time.perf_counter()
        data = aecodec.encode(rgb, weights=model)
        seconds = time.perf_counter() - start
        ours = psnr(rgb, np.asarray(aecodec.decode(data, weights=model).convert("RGB")))
        webp, webp_psnr = _sizes_and_psnr(rgb, "WEBP", quality=80)
        webp_lossless, _ = _sizes_and_psnr(rgb, "WEBP", lossless=True)
        png, _ = _sizes_and_psnr(rgb, "PNG", optimize=True)
        exact = math.isinf(ours)
        same_size = None if exact else _webp_within(rgb, len(data))
        meets = len(data) <= 1.1 * webp_lossless if exact else len(data) <= webp and ours >= webp_psnr
        row = {"image": name, "pixels": rgb.shape[0] * rgb.shape[1], "coding": aecodec.info(data)["coding"],
               "bytes": len(data), "psnr": ours, "enc_s": seconds, "webp80": webp, "webp80_psnr": webp_psnr,
               "webp_lossless": webp_lossless, "png": png, "meets": meets,
               "webp_same_size_psnr": same_size and same_size[1]}
        if name not in SYNTHETIC:  # the bar is for synthetic images; photos must code as before
            row["meets"] = None
            row["learned_identical"] = data == aecodec.encode(rgb, mode="learned", weights=model)
        rows.append(row)
        print(row, flush=True)
    bpp = lambda n, row: f"{n} ({8 * n / row['pixels']:.3f})"  # noqa: E731
    lines = ["| image | aecodec (default) bytes (bpp) | coding | PSNR | WebP q80 bytes (bpp), PSNR | WebP lossless "
             "| PNG | aecodec / WebP lossless | WebP no bigger than aecodec: PSNR | meets the bar |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        quality = "exact" if math.isinf(row["psnr"]) else f"{row['psnr']:.2f}"
        same = "" if "learned_identical" not in row else ", = learned" if row["learned_identical"] else ", DIFFERS from learned"
        webp_same_size = "—" if row["webp_same_size_psnr"] is None else f"{row['webp_same_size_psnr']:.2f}"
        lines.append(f"| {row['image']} | {bpp(row['bytes'], row)} | {row['coding']}{same} | {quality} | "
                     f"{bpp(row['webp80'], row)}, {row['webp80_psnr']:.2f} | {bpp(row['webp_lossless'], row)} | "
                     f"{bpp(row['png'], row)} | {row['bytes'] / row['webp_lossless']:.3f} | "
                     f"{webp_same_size} | {'—' if row['meets'] is None else 'yes' if row['meets'] else 'no'} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return rows


def center_crop(rgb: np.ndarray, side: int | None) -> np.ndarray:
    if not side:
        return rgb
    h, w = rgb.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def effort_run(images: list[Path], levels: list[int], qualities: list[float], crop: int | None) -> dict:
    """level -> quality -> metrics averaged over images; each image and quality codes every level in turn."""
    import aecodec
    from tqdm import tqdm

    model = aecodec.load_model(WEIGHTS)
    points = {level: {q: [] for q in qualities} for level in levels}
    jobs = [(path, q) for path in images for q in qualities]
    # One untimed encode per level first: effort > 0 builds its differentiable model once per process
    # (~3 s with compressai's import), a start-up cost, not a per-image one.
    with Image.open(images[0]) as img:
        first = center_crop(np.asarray(img.convert("RGB")), crop)
    for level in levels:
        aecodec.encode(first, qualities[0], effort=level, weights=model)
    for path, quality in tqdm(jobs, desc="effort", unit="image x quality"):
        with Image.open(path) as img:
            rgb = center_crop(np.asarray(img.convert("RGB")), crop)
        for level in levels:
            encode = lambda rgb, q, level=level: aecodec.encode(rgb, q, effort=level, weights=model)  # noqa: E731
            decode = lambda data: np.asarray(aecodec.decode(data, weights=model))  # noqa: E731
            points[level][quality].append(measure(encode, decode, rgb, quality, runs=TIMING_RUNS))
    return {level: {q: {k: float(np.mean([p[k] for p in runs])) for k in ("bpp", "psnr", "enc_s", "dec_s")}
                    for q, runs in by_quality.items()} for level, by_quality in points.items()}


def effort_table(averages: dict) -> str:
    base = averages[0]
    base_enc, base_dec = (sum(p[k] for p in base.values()) for k in ("enc_s", "dec_s"))
    lines = ["| effort | BD-rate vs effort 0, PSNR, cubic (PCHIP) | encode time x effort 0 | decode time x effort 0 |",
             "|---|---|---|---|"]
    for level, curve in averages.items():
        bpp, quality = [p["bpp"] for p in curve.values()], [p["psnr"] for p in curve.values()]
        ref_bpp, ref_quality = [p["bpp"] for p in base.values()], [p["psnr"] for p in base.values()]
        cubic, pchip = (bd_rate(ref_bpp, ref_quality, bpp, quality, m) for m in ("cubic", "pchip"))
        enc, dec = (sum(p[k] for p in curve.values()) for k in ("enc_s", "dec_s"))
        lines.append(f"| {level} | {cubic:+.1f} ({pchip:+.1f}) | {enc / base_enc:.1f} | {dec / base_dec:.2f} |")
    return "\n".join(lines)


def effort_main(args, images: list[Path], out: Path) -> dict:
    levels = sorted({0, *map(int, args.effort.split(","))})
    qualities = [float(q) for q in args.qualities.split(",")]
    averages = effort_run(images, levels, qualities, args.crop)
    table = effort_table(averages)
    crop = f"{args.crop}x{args.crop} centre crops of " if args.crop else ""
    header = f"aecodec encoder effort: {crop}{len(images)} images from {Path(args.images).name}, qualities {args.qualities}"
    (out / "effort.json").write_text(json.dumps({"images": [p.name for p in images], "crop": args.crop,
                                                 "levels": {str(k): v for k, v in averages.items()}}, indent=1))
    (out / "effort.md").write_text(header + "\n\n" + table + "\n")
    print(header)
    print(table)
    return averages


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of images (PNG, PPM, BMP, TIFF)")
    parser.add_argument("--synthetic", action="store_true",
                        help="score the default coding on bench.synthetic's drawings (and --images' photos)")
    parser.add_argument("--out", help="output folder (default bench/results/<folder name>)")
    parser.add_argument("--codecs", default="aecodec,jpeg420,jpeg444,webp,avif,jxl")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--weights", help="aecodec's model: a released name or a weights file (default: the default model)")
    parser.add_argument("--effort", help="compare aecodec's encoder effort levels (e.g. 0,1,2,3) instead of codecs")
    parser.add_argument("--qualities", default="2,4,6,8", help="with --effort: the qualities (default 2,4,6,8)")
    parser.add_argument("--crop", type=int, default=256, help="with --effort: centre crops of this side (0: whole)")
    args = parser.parse_args(argv)
    global WEIGHTS
    WEIGHTS = args.weights
    if args.synthetic:
        photos = [] if args.images is None else sorted(p for p in Path(args.images).iterdir()
                                                       if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
        return synthetic_table(photos, Path(args.out or Path(__file__).parent / "results" / "synthetic"))
    if args.images is None:
        parser.error("--images is required (or --synthetic)")

    folder = Path(args.images)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not images:
        raise SystemExit(f"error: no images in {folder}")
    codecs = args.codecs.split(",")
    unknown = set(codecs) - set(codec_table())
    if unknown:
        raise SystemExit(f"error: unknown codecs {sorted(unknown)}; known: {sorted(codec_table())}")
    out = Path(args.out or Path(__file__).parent / "results" / folder.name)
    out.mkdir(parents=True, exist_ok=True)
    if args.effort:
        return effort_main(args, images, out)

    results = run(images, codecs, out)
    summary = summarize(results)
    is_kodak = {f"kodim{i:02d}.png" for i in range(1, 25)} <= {p.name for p in images}
    published = json.loads(PUBLISHED.read_text()) if is_kodak else None

    (out / "results.json").write_text(json.dumps({"images": [p.name for p in images], "codecs": results}, indent=1))
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["codec", "setting", "bpp", "psnr", "ms_ssim", "enc_s", "dec_s"])
        for name, curve in summary.items():
            for i, setting in enumerate(curve["setting"]):
                writer.writerow([name, setting] + [f"{curve[k][i]:.6g}" for k in ("bpp", "psnr", "ms_ssim", "enc_s", "dec_s")])
    bd = bd_table(summary)
    if published:
        ours = summary.get("aecodec")
        extra = ["### aecodec against published Kodak results (PSNR BD-rate, cubic (PCHIP))", "",
                 "| reference | BD-rate |", "|---|---|"]
        for name in ("JPEG",) + PUBLISHED_SHOWN:
            ref = published[name]
            if ours:
                extra.append(f"| {name} (published) | {bd_rate(ref['bpp'], ref['psnr'], ours['bpp'], ours['psnr']):+.1f} "
                             f"({bd_rate(ref['bpp'], ref['psnr'], ours['bpp'], ours['psnr'], 'pchip'):+.1f}) |")
        bd += "\n" + "\n".join(extra) + "\n"
    header = f"{len(images)} images from {folder.name}; " + "; ".join(f"{s['label']}: {s['version']}" for s in summary.values())
    (out / "bd.md").write_text(header + "\n\n" + bd)
    plot(summary, out / "rd.png", published)
    print(bd)
    print(f"wrote {out}/results.json, summary.csv, bd.md, rd.png")
    return summary


if __name__ == "__main__":
    main()
