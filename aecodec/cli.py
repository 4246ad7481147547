"""The `aecodec` command: compress, decompress, info, models, train.

Exit codes: 0 success; 1 an aecodec error (AecError: unreadable image, damaged or foreign .aec, bad
option value, missing weights) or an OS error (file not found, disk full), one line on stderr;
2 usage error (argparse); 130 interrupted. Anything else is a bug and shows its traceback. Outputs are written to a temporary file beside the target and renamed into place,
so a failed run never leaves a partial file, and an existing output is only replaced with --force.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .errors import AecError, OptionError, WeightsError
from .format import info
from .quality import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN


# zlib level of decompressed PNGs. Pillow's default, 6, was 40 % of a decompress: on Kodak level 1
# writes 5.7x faster (24 MP: 2.5x) for a 13 % larger file.
PNG_LEVEL = 1


class CliError(AecError):
    """A problem with the command's files: an output exists, an input is missing."""


@contextlib.contextmanager
def atomic_output(path: Path, force: bool):
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it."""
    if path.exists() and not force:
        raise CliError(f"{path} exists (use --force to overwrite)")
    if path.is_dir():
        raise CliError(f"{path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CliError(f"output folder {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


def compress_file(src: Path, out: Path, rate: dict, weights, backend, force: bool, effort: int = 0,
                  progress: bool = False) -> dict:
    """rate: the keyword arguments of encode() that set the coding and rate (mode=, and quality=, target_bpp=
    or target_bytes=)."""
    from .api import encode

    if not src.is_file():
        raise CliError(f"{src}: no such file")
    with atomic_output(out, force) as tmp:
        data = encode(src, **rate, effort=effort, weights=weights, backend=backend, progress=progress)
        tmp.write_bytes(data)
    return info(data)


def _batch_job(job):
    """One file of a batch, in a worker process: (src, info or None, error message or None)."""
    src, out, rate, weights, backend, force, effort = job
    try:
        return src, compress_file(src, out, rate, weights, backend, force, effort), None
    except (AecError, OSError) as exc:
        return src, None, str(exc)


def _batch_inputs(paths: list[str]) -> list[Path]:
    from .image import IMAGE_SUFFIXES

    inputs = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inputs += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            inputs.append(path)
    return inputs


def cmd_compress(args) -> None:
    rate = {"quality": args.quality, "target_bpp": args.target_bpp, "target_bytes": args.target_size}
    rate = {key: value for key, value in rate.items() if value is not None}
    rate["mode"] = "lossless" if args.lossless and args.mode is None else args.mode or "auto"
    if args.lossless and args.mode not in (None, "lossless"):
        raise OptionError(f"--lossless contradicts --mode {args.mode}")
    if args.output_dir is None:
        if len(args.inputs) != 2:
            raise CliError("give IN OUT, or several inputs (files or folders) with --output-dir DIR")
        src, out = map(Path, args.inputs)
        meta = compress_file(src, out, rate, args.weights, args.backend, args.force, args.effort, not args.quiet)
        if not args.quiet:
            print(f"{src} -> {out}: {meta['bytes']} bytes, {meta['bpp']:.4f} bpp, {_coding(meta)}")
        return

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = _batch_inputs(args.inputs)
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems):
        raise CliError("two inputs share a name: their outputs would collide in --output-dir")
    jobs = [(src, out_dir / f"{src.stem}.aec", rate, args.weights, args.backend, args.force, args.effort)
            for src in inputs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    failures = []
    workers = max(1, min(args.jobs, len(jobs)))
    # spawn, not fork: forking a process whose OpenMP threads are running can deadlock the children.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(workers,)) as pool:
        for src, meta, error in tqdm(pool.map(_batch_job, jobs), total=len(jobs), unit="image", disable=args.quiet):
            if error:
                failures.append(f"{src}: {error}")
    for failure in failures:
        print(f"aecodec: error: {failure}", file=sys.stderr)
    if failures:
        raise CliError(f"{len(failures)} of {len(jobs)} images failed")
    if not args.quiet:
        print(f"compressed {len(jobs)} images into {out_dir}")


def _worker_init(workers: int) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def cmd_decompress(args) -> None:
    from .api import decode

    src, out = Path(args.input), Path(args.output)
    fmt = _image_format(out)
    if args.png_level is not None and fmt != "PNG":
        raise OptionError(f"--png-level applies to .png outputs, not {out.suffix or out.name}")
    options = {"compress_level": PNG_LEVEL if args.png_level is None else args.png_level} if fmt == "PNG" else {}
    data = _read(src)
    image = decode(data, weights=args.weights, backend=args.backend, precision=args.precision)
    with atomic_output(out, args.force) as tmp:
        try:
            image.save(tmp, format=fmt, **options)
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"cannot write {out}: {exc}") from exc
    if not args.quiet:
        print(f"{src} -> {out}: {image.width}x{image.height} {image.mode}")


def _image_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise CliError(f"cannot tell the image format of {path} from its extension (use .png, .bmp, .tif, ...)")
    return fmt


def cmd_info(args) -> None:
    if args.backend_info:
        from . import _native

        print(json.dumps({"backend": _native.backend_name(), "native": _native.HAS_EXT, "cuda": _native.HAS_CUDA,
                          "native_import_error": _native.IMPORT_ERROR}, indent=1))
        return
    if not args.file:
        raise CliError("info needs a FILE (or --backend)")
    meta = info(_read(Path(args.file)))
    if args.json:
        print(json.dumps(meta, indent=1))
        return
    if meta["model_id"] is None:
        model = ""
    else:
        model = f"{meta['model']} ({meta['model_id']})" if meta["model"] else f"{meta['model_id']} (not a released model)"
        model = f", model {model}"
    print(f"{args.file}: {meta['width']}x{meta['height']} {meta['mode']}, {meta['bytes']} bytes, {meta['bpp']:.4f} bpp, "
          f"{_coding(meta)}{model}, format v{meta['format_version']}")
    print("  streams: " + ", ".join(f"{k} {v} B" for k, v in meta["streams"].items()))


def cmd_models(args) -> None:
    from .weights import ARCHIVE, DEFAULT_MODEL, RELEASES

    def megabytes(release) -> float | None:
        try:
            return round(release.size_bytes / 1e6, 1)
        except (WeightsError, OSError):  # a superseded model without (this version of) the archive
            return None

    rows = [{"name": r.name, "model_id": r.model_id.hex(), "N": r.N, "M": r.M, "qualities": list(r.qualities),
             "release": r.release, "megabytes": megabytes(r), "default": r.name == DEFAULT_MODEL,
             "encodes": r.encodes}
            for r in RELEASES.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<12} {'model id':<16} {'N/M':<8} {'qualities':<10} {'since':<7} {'MB':>5}  uses")
    for row in rows:
        size, qualities = f"{row['N']}/{row['M']}", f"{row['qualities'][0]:g}-{row['qualities'][1]:g}"
        shipped = "-" if row["megabytes"] is None else f"{row['megabytes']:.1f}"
        print(f"{row['name']:<12} {row['model_id']:<16} {size:<8} {qualities:<10} {row['release']:<7} {shipped:>5}"
              + ("  encode (the default), decode" if row["default"] else "  encode, decode" if row["encodes"]
                 else "  decode" if row["megabytes"] is not None else f"  decode (needs {ARCHIVE}: not installed or too old)"))
    print("Every released model decodes its files; a file names its model by id.")


def _coding(meta: dict) -> str:
    if meta["quality"] is None:
        return meta["coding"]
    under = f" (the model's at {meta['learned_quality']:g})" if meta["learned_quality"] is not None else ""
    return f"{meta['coding']}, quality {meta['quality']:g}{under}"


def cmd_train(args) -> None:
    from . import train

    train.main(args.train_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aecodec", description="A learned image codec.")
    parser.add_argument("--version", action="version", version=f"aecodec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--force", "-f", action="store_true", help="overwrite an existing output")
        p.add_argument("--weights", help="weights file or shipped model name (default: the shipped model)")
        p.add_argument("--backend", choices=["python", "native"], help="entropy coder (default: native when built)")
        p.add_argument("--quiet", "-q", action="store_true")

    p = sub.add_parser("compress", help="image -> .aec (IN OUT, or many inputs with --output-dir)")
    p.add_argument("inputs", nargs="+", metavar="IN [OUT]", help="IN OUT, or files and folders with --output-dir")
    p.add_argument("--output-dir", "-o", help="compress every input (folders: their images) to DIR/<name>.aec")
    p.add_argument("--jobs", "-j", type=int, default=1, help="parallel processes for several inputs (default 1)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", "-Q", type=float,
                      help=f"rate knob, any number in [{QUALITY_MIN:g}, {QUALITY_MAX:g}]; higher = more bits (default {DEFAULT_QUALITY:g})")
    rate.add_argument("--target-bpp", type=float, metavar="BPP",
                      help="instead of a quality: the best quality whose file takes at most BPP bits per pixel")
    rate.add_argument("--target-size", type=int, metavar="BYTES",
                      help="instead of a quality: the best quality whose file takes at most BYTES bytes")
    # Checked by encode() (OptionError, exit code 1), like the other options' values.
    p.add_argument("--mode", metavar="learned|lossless|auto",
                   help="coding: the learned model, lossless (exact), or auto (default): lossless when that is smaller, "
                        "or worth its extra bits at this quality (see README)")
    p.add_argument("--lossless", action="store_true", help="store the image exactly (same as --mode lossless)")
    p.add_argument("--effort", "-e", type=int, default=0, metavar="0..3",
                   help="encode time for fewer bits at the same fidelity: 0 (default) fastest, 3 slowest, "
                        "on average the most saved (~6 %% at 1 in ~7x the time, ~9 %% at 2 in ~21x, ~13 %% at 3 in ~1900x, minutes "
                        "on a CPU; times on a 2-core Intel Xeon, lower where g_s runs on fast bf16 units); "
                        "any decoder reads the result")
    common(p)
    p.set_defaults(run=cmd_compress)

    p = sub.add_parser("decompress", help=".aec -> image (format from the output's extension: .png, .ppm, .bmp, .tif, ...)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--png-level", type=int, choices=range(10), metavar="0-9",
                   help=f"PNG zlib level: 0 stores, 9 is smallest and slowest (default {PNG_LEVEL})")
    p.add_argument("--precision", choices=["float32", "bf16"],
                   help="synthesis precision (default: bf16 where the CPU/GPU runs it faster, else float32; "
                        "only pixels change, by a fraction of a level)")
    common(p)
    p.set_defaults(run=cmd_decompress)

    p = sub.add_parser("info", help="what an .aec file holds; --backend: which coder this install uses")
    p.add_argument("file", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--backend", dest="backend_info", action="store_true", help="print the coder backend and exit")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("models", help="the released models: every one decodes its files; the default encodes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_models)

    # The training module defines and parses its own options (`aecodec train --help`): it imports torch,
    # which the other commands' start-up should not wait for.
    p = sub.add_parser("train", help="train the variable-rate model (options: aecodec train --help)", add_help=False)
    p.set_defaults(run=cmd_train)
    return parser


def run() -> None:
    """The console command: main(), then, for every command but train, os._exit. After `import torch` the
    interpreter's own shutdown takes ~0.9 s and ~130 MB more memory here (`python -c "import torch"`:
    2.9 s, 652 MB; with os._exit: 2.0 s, 524 MB), and a finished command has nothing left for it to do:
    its files are closed and renamed into place. Training keeps the normal exit, which flushes its logs."""
    argv = sys.argv[1:]
    code = main(argv)
    if "train" in argv[:1]:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or 141  # the reader left before buffered output came out: as in main()
        except (OSError, ValueError):  # a closed stream
            pass
    os._exit(code)


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.train_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.run(args)
    except AecError as exc:
        print(f"aecodec: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader left early (`aecodec models | head`): as Unix tools, no message
        return 141  # 128 + SIGPIPE
    except OSError as exc:
        print(f"aecodec: error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aecodec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    run()
