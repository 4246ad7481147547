"""Training on a lent GPU machine for a few minutes: pack here, run there, unpack here.

The device tool sends the working tree (64 MiB in all, carried paths included) and brings back at most
8 files of 16 MiB from $OUT, so the run cannot take ../shared nor bring back the 84 MB training state:

    python -m bench.device_train pack --data ../shared/data/train --init aec-hp128k  # here: .device-train/
    # device tool, one call with the GPU check (README):
    #   run(command="python3 -m bench.device_check; python3 -m bench.device_train run --minutes 5",
    #       carry=[".device-train"], timeout_s=590)
    python -m bench.device_train unpack FILES_AT --out runs/gpu.pt                  # here: joins and checks

`pack` leaves behind the released weights the run does not use (every model but the default and the
starting one): it untracks them in git's index, keeping the files, and lists them in .git/info/exclude,
so the device tool does not send them; `unpack` (or `restore`) tracks them again. Then it stores as many
training photos as fit the budget (JPEG quality 95, 4:4:4: ~3.3 bpp, ~43 dB, far
above the model's top quality), in an order drawn from --seed, so each run can see another subset; the
wheels the machine lacks (compressai, pytorch-msssim: its Python is 3.12); and the starting weights when
they are a file (a shipped model's name travels as a name). `run` trains with `aecodec train` for
--minutes, then splits the exported weights file into parts that fit. CPU training then goes on from
them: `aecodec train --init-from runs/gpu.pt ...` with the old state moved aside.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAVEL_LIMIT = 64 * 2**20  # what the device tool sends: tracked and untracked-not-ignored files, carried paths
TRAVEL_MARGIN = 2 * 2**20
PART_BYTES = 15 * 2**20  # files back from $OUT: 16 MiB each at most
WHEEL_PYTHON = "3.12"  # the device image's python3
WHEEL_PLATFORMS = ["manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
JPEG_QUALITY = 95
MANIFEST = "manifest.json"
LEFT_BEHIND_BEGIN = "# bench.device_train: released weights left behind (undo: python -m bench.device_train restore)"
LEFT_BEHIND_END = "# end of what bench.device_train left behind"


def travelling_bytes(repo: Path) -> int:
    """Bytes of the files the device tool sends without being told: tracked and untracked-not-ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    paths = [repo / os.fsdecode(name) for name in listed if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # literal pathspecs: a path is a file's name, never a glob
    return subprocess.run(["git", "--literal-pathspecs", *args], cwd=repo, capture_output=True, text=True, check=check)


def toplevel(repo: Path) -> Path | None:
    """The main checkout holding `repo`, None outside git; refuses a linked worktree, whose index is its
    own while .git/info/exclude is shared (and the device tool sends the main checkout anyway)."""
    done = git(repo, "rev-parse", "--show-toplevel", "--git-dir", "--git-common-dir", check=False)
    if done.returncode:
        return None
    top, git_dir, common = done.stdout.splitlines()
    if (repo / git_dir).resolve() != (repo / common).resolve():
        raise SystemExit(f"error: {repo} is a linked worktree; pack and restore in the main checkout")
    return Path(top)


def head_files(repo: Path) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "-z", "--name-only", "HEAD").stdout.split("\0"))


def exclude_file(repo: Path) -> Path:
    return repo / git(repo, "rev-parse", "--git-path", "info/exclude").stdout.strip()


def left_behind(repo: Path) -> list[str]:
    """The paths an earlier leave_behind untracked, read from its block in .git/info/exclude."""
    exclude = exclude_file(repo)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if LEFT_BEHIND_BEGIN not in lines:
        return []
    start = lines.index(LEFT_BEHIND_BEGIN) + 1
    block = lines[start : lines.index(LEFT_BEHIND_END, start)] if LEFT_BEHIND_END in lines[start:] else None
    if block is None or not all(line.startswith("/") and len(line) > 1 for line in block):
        raise SystemExit(f"error: the block of paths bench.device_train left behind in {exclude} was edited; "
                         f"track them again by hand (git reset -q HEAD -- PATH) and delete the block")
    return [line[1:] for line in block]


def leave_behind(repo: Path, paths: list[Path]) -> list[str]:
    """Untrack those of `paths` that the index holds as HEAD has them (the files stay) and ignore them,
    so the device tool does not send them; restore() tracks them again. The released weights are most of
    the tree. Until then the index holds their deletion: a commit in between would commit it."""
    restore(repo)
    root = repo.resolve()
    names = [path.resolve().relative_to(root).as_posix() for path in paths if path.resolve().is_relative_to(root)]
    in_head = head_files(repo)
    names = [name for name in names if name in in_head and (root / name).is_file()
             and git(repo, "diff", "--cached", "--quiet", "HEAD", "--", name, check=False).returncode == 0]
    if names:
        # the block first: whatever happens next, restore() knows what to track again
        exclude = exclude_file(repo)
        exclude.parent.mkdir(parents=True, exist_ok=True)
        kept = exclude.read_text() if exclude.exists() else ""
        block = [LEFT_BEHIND_BEGIN, *("/" + name for name in names), LEFT_BEHIND_END]
        exclude.write_text(kept + ("" if kept.endswith("\n") or not kept else "\n") + "\n".join(block) + "\n")
        git(repo, "rm", "--cached", "-q", "--", *names)
    return names


def unused_weights(repo: Path, init: str) -> list[Path]:
    """The released weights files in the source tree `repo` that a device run from `init` does not read:
    all but the default model's (bench.device_check encodes with it) and the starting model's."""
    from aecodec.weights import DEFAULT_MODEL, RELEASES

    return [r.source_path(repo) for r in RELEASES.values() if r.name not in (DEFAULT_MODEL, init)]


def restore(repo: Path) -> list[str]:
    """Track again what leave_behind untracked (as HEAD has it) and drop its block from .git/info/exclude."""
    names = left_behind(repo)
    if not names:
        return []
    in_head = head_files(repo)
    if any(name in in_head for name in names):
        git(repo, "reset", "-q", "HEAD", "--", *(name for name in names if name in in_head))
    missing = [name for name in names if git(repo, "ls-files", "--error-unmatch", "--", name, check=False).returncode]
    if missing:
        raise SystemExit(f"error: HEAD no longer has {', '.join(missing)}: a commit since pack deleted them; "
                         f"stage them from the commit before it (git checkout COMMIT^ -- PATH), then run restore again")
    exclude = exclude_file(repo)
    lines = exclude.read_text().splitlines()
    start = lines.index(LEFT_BEHIND_BEGIN)
    del lines[start : lines.index(LEFT_BEHIND_END, start) + 1]
    exclude.write_text("".join(line + "\n" for line in lines))
    return names


def download_wheels(folder: Path) -> None:
    from importlib.metadata import version

    pins = [f"compressai=={version('compressai')}", f"pytorch-msssim=={version('pytorch-msssim')}"]
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                    WHEEL_PYTHON, "--implementation", "cp", *platforms, "-d", str(folder), *pins], check=True)


def python_path(pack_dir: Path) -> str:
    """PYTHONPATH for subprocesses: the checkout (for aecodec and bench), and, where this Python lacks
    compressai, the pack's wheels installed into a temporary folder."""
    paths = [str(Path(__file__).resolve().parents[1])]
    wheels = sorted((pack_dir / "wheels").glob("*.whl"))
    if wheels and importlib.util.find_spec("compressai") is None:
        site = tempfile.mkdtemp(prefix="aecodec-site-")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", site, *map(str, wheels)], check=True)
        paths.insert(0, site)
    return os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def pack(args) -> None:
    from PIL import Image

    from aecodec.image import IMAGE_SUFFIXES
    from aecodec.weights import load

    out, repo = Path(args.out), toplevel(Path(args.repo))
    if repo is None:
        raise SystemExit(f"error: {args.repo} is not a git checkout (the device tool sends one)")
    model = load(args.init)  # also checks that the weights load
    if not model.encodes:  # here, not on the device after its time is spent
        raise SystemExit(f"error: {args.init} ships decoder-only: start from the default model or a weights file")
    config = model.net.config
    if out.exists():
        if not (out / MANIFEST).exists():
            raise SystemExit(f"error: {out} exists and is not a pack; remove it or choose another --out")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    init = args.init
    if Path(args.init).is_file():
        shutil.copyfile(args.init, out / "init.pt")
        init = "init.pt"
    if args.wheels:
        download_wheels(out / "wheels")
    for name in leave_behind(repo, unused_weights(repo, args.init)):
        print(f"left behind (untracked until unpack or restore; commit nothing until then): {name}")
    try:
        budget = TRAVEL_LIMIT - TRAVEL_MARGIN - travelling_bytes(repo) - sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        photos = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        random.Random(args.seed).shuffle(photos)
        used = stored = 0
        for photo in photos:
            target = out / "images" / f"{stored:04d}.jpg"
            with Image.open(photo) as img:
                img.convert("RGB").save(target, quality=JPEG_QUALITY, subsampling=0)
            size = target.stat().st_size
            if used + size > budget:
                target.unlink()
                break
            used += size
            stored += 1
        if not stored:
            raise SystemExit(f"error: no photo fits the {budget / 2**20:.1f} MiB left for data")
    except BaseException:
        restore(repo)
        raise
    manifest = {"init": init, "N": config["N"], "M": config["M"], "images": stored, "of": len(photos), "seed": args.seed}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{out}: {stored} of {len(photos)} photos ({used / 2**20:.1f} MiB), init {args.init} (N={config['N']}, "
          f"M={config['M']}); send it with carry=[\"{out}\"]")


def run(args) -> None:
    pack_dir = Path(args.dir).resolve()
    manifest = json.loads((pack_dir / MANIFEST).read_text())
    if not (args.results or os.environ.get("OUT")):
        raise SystemExit("error: no --results folder and no $OUT (the device tool sets it)")
    results = Path(args.results or os.environ["OUT"])
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=python_path(pack_dir))
    init = manifest["init"]
    if (pack_dir / init).is_file():
        init = str(pack_dir / init)
    scratch = Path(tempfile.mkdtemp(prefix="aecodec-train-"))
    weights = scratch / "gpu.pt"
    command = [sys.executable, "-m", "aecodec.train", "--data", str(pack_dir / "images"), "--out", str(weights),
               "--init-from", init, "--N", str(manifest["N"]), "--M", str(manifest["M"]), "--batch", str(args.batch),
               "--crop", str(args.crop), "--lr", str(args.lr), "--lr-drop", "1.0", "--steps", "100000000",
               "--minutes", str(args.minutes), "--checkpoint-every", str(args.checkpoint_every),
               "--seed", str(manifest["seed"]), "--log", str(results / "train.log")]
    started = time.time()
    subprocess.run(command, env=env, check=True)
    steps = int((results / "train.log").read_text().split()[-5])  # the last line: step, seconds, loss, bpp, psnr
    data = weights.read_bytes()
    parts = []
    for index in range(0, len(data), PART_BYTES):
        name = f"gpu.pt.part{index // PART_BYTES}"
        (results / name).write_bytes(data[index : index + PART_BYTES])
        parts.append(name)
    report = {"steps": steps, "seconds": round(time.time() - started), "sha256": hashlib.sha256(data).hexdigest(),
              "parts": parts, "pack": manifest, "command": command[1:]}
    (results / "result.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("steps", "seconds", "sha256", "parts")}))


def unpack(args) -> None:
    restore_command(args)
    folder, out = Path(args.folder), Path(args.out)
    report = json.loads((folder / "result.json").read_text())
    if out.exists():
        raise SystemExit(f"error: {out} exists; not overwritten")
    data = b"".join((folder / name).read_bytes() for name in report["parts"])
    if hashlib.sha256(data).hexdigest() != report["sha256"]:
        raise SystemExit(f"error: the parts in {folder} do not join to the file the device wrote (sha256 differs)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    print(f"wrote {out}: {report['steps']} steps on the device from {report['pack']['init']}, "
          f"{report['pack']['images']} photos; go on with aecodec train --init-from {out}")


def restore_command(args) -> None:
    repo = toplevel(Path(args.repo))
    for name in restore(repo) if repo else []:
        print(f"tracked again: {name}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.device_train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: photos, wheels and starting weights into a folder to carry")
    p.add_argument("--data", required=True, help="folder of training photos (never the test set)")
    p.add_argument("--init", required=True, help="starting weights: a shipped model's name or a weights file")
    p.add_argument("--out", default=".device-train")
    p.add_argument("--repo", default=".", help="the checkout the device tool sends (its size counts)")
    p.add_argument("--seed", type=int, default=0, help="which photos, when not all fit")
    p.add_argument("--no-wheels", dest="wheels", action="store_false", help="the machine has compressai already")
    p.set_defaults(func=pack)
    p = sub.add_parser("run", help="on the device machine: train for --minutes, weights in parts under $OUT")
    p.add_argument("--dir", default=".device-train")
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--results", help="folder for the results (default: $OUT)")
    p.set_defaults(func=run)
    p = sub.add_parser("unpack", help="here: join the parts the device brought back into a weights file")
    p.add_argument("folder", help="where the device tool put the files (files_at)")
    p.add_argument("--out", required=True)
    p.add_argument("--repo", default=".", help="the checkout whose weights pack left behind")
    p.set_defaults(func=unpack)
    p = sub.add_parser("restore", help="here: track again the weights pack left behind (unpack does it too)")
    p.add_argument("--repo", default=".")
    p.set_defaults(func=restore_command)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
