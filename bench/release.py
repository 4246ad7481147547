"""Release a trained model as the new default: python -m bench.release WEIGHTS NAME --version X.Y.Z [--rd DIR].

The mechanical steps of README "The wide model", in a clean source tree with the dev install:
- WEIGHTS (an exported weights file that encodes) becomes aecodec/weights/NAME.pt, the new default model;
- the previous default ships decoder-only from then on: its decoder goes into archive/aecodec_archive/ and
  its RELEASES entry gains decoder_sha256 and the archive's next version, which aecodec_archive.__version__
  and aecodec's `aecodec-archive>=` requirement become; aecodec.__version__ becomes X.Y.Z;
- commands that start from the default (`--init-from`, `--init`) in README.md and bench/device_train.py
  name NAME;
- with --rd, DIR's cached Kodak results for WEIGHTS (`python -m bench.rd --images KODAK --codecs aecodec
  --weights WEIGHTS --out DIR`) become the committed cache's aecodec results, so `python -m bench.rd
  --images KODAK` reruns from them;
- NAME's conformance files (bench.conformance) and fuzz seeds (bench.fuzz seeds; the superseded model
  keeps its smallest ones).
Every edit is worked out and checked before anything is written; all it writes is staged with git. The
benchmarks, README's figures and NEWS are left to do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

from bench.fuzz import SEED_SIZES

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "aecodec" / "weights" / "__init__.py"
ARCHIVE_INIT = ROOT / "archive" / "aecodec_archive" / "__init__.py"
CORPUS = ROOT / "tests" / "data" / "fuzz" / "corpus"
KODAK_CACHE = ROOT / "bench" / "results" / "kodak" / "cache"


def add_release(registry: str, old: str, new: str, sha256: str, decoder_sha256: str, archive_version: int,
                version: str, N: int, M: int) -> str:
    """The registry's source with `old`'s entry decoder-only (from aecodec-archive `archive_version`), an
    entry for `new` appended to RELEASES and `new` the default."""
    entry = re.compile(r'(?P<head>(?P<indent> *)Release\("%s", "%s\.pt", "[0-9a-f]{64}",)\n(?P<inner> *)'
                       r'(?P<config>\d+, \d+, (?P<qualities>\([^)]*\)), "[^"]+")\),\n' % (re.escape(old), re.escape(old)))
    found = entry.search(registry)
    if found is None:
        raise SystemExit(f"error: no whole-weights entry for {old} in {REGISTRY} (is it the default?)")
    indent, inner = found["indent"], found["inner"]
    replacement = (f'{found["head"]}\n{inner}{found["config"]},\n'
                   f'{inner}decoder_sha256="{decoder_sha256}", archive_version={archive_version}),\n'
                   f'{indent}Release("{new}", "{new}.pt", "{sha256}",\n{inner}{N}, {M}, {found["qualities"]}, "{version}"),\n')
    registry = registry[:found.start()] + replacement + registry[found.end():]
    return substitute(registry, r'^DEFAULT_MODEL = "%s"' % re.escape(old), f'DEFAULT_MODEL = "{new}"', REGISTRY)


def substitute(text: str, pattern: str, replacement: str, where: Path, count: int | None = 1) -> str:
    """text with the pattern's matches replaced: exactly `count` of them, or at least one (None)."""
    text, made = re.subn(pattern, replacement, text, flags=re.M)
    if made == 0 or (count is not None and made != count):
        raise SystemExit(f"error: expected {count or 'some'} match(es) of {pattern!r} in {where}, found {made}")
    return text


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def archive_version_in() -> int:
    """The source tree's aecodec-archive version (not the installed one's)."""
    return int(re.search(r'^__version__ = "(\d+)"', ARCHIVE_INIT.read_text(), re.M)[1])


def plan_sources(old: str, new: str, sha256: str, decoder_sha256: str, version: str, N: int, M: int) -> dict[Path, str]:
    """Every source file the release edits -> its new text, each edit checked to apply exactly."""
    import aecodec

    if version_key(version) <= version_key(aecodec.__version__):
        raise SystemExit(f"error: version {version} is not newer than {aecodec.__version__}")
    archive = archive_version_in() + 1
    plan = {REGISTRY: add_release(REGISTRY.read_text(), old, new, sha256, decoder_sha256, archive, version, N, M)}
    for path, pattern, replacement in (
            (ROOT / "aecodec" / "__init__.py", r'^__version__ = "[^"]+"', f'__version__ = "{version}"'),
            (ARCHIVE_INIT, r'^__version__ = "\d+"', f'__version__ = "{archive}"'),
            (ROOT / "pyproject.toml", r'"aecodec-archive>=\d+"', f'"aecodec-archive>={archive}"')):
        plan[path] = substitute(path.read_text(), pattern, replacement, path)
    for path in (ROOT / "README.md", ROOT / "bench" / "device_train.py"):
        plan[path] = substitute(path.read_text(), r"(--init(?:-from)? )%s\b" % re.escape(old), rf"\g<1>{new}", path, count=None)
    return plan


def plan_results(rd: Path, version: str, model_id: str) -> dict[Path, str]:
    """The committed Kodak cache's aecodec.json files -> DIR's results for the new model, relabelled as
    bench.rd labels the released version; DIR must hold all of Kodak's images, for these weights."""
    results = {path.parent.name: path for path in (rd / "cache").glob("*/aecodec.json")}
    if set(results) != {path.name for path in KODAK_CACHE.iterdir() if path.is_dir()}:
        raise SystemExit(f"error: {rd}/cache does not hold aecodec results for exactly the Kodak images of {KODAK_CACHE}")
    plan = {}
    for image, path in results.items():
        data = json.loads(path.read_text())
        if not data["version"].endswith(f" model {model_id}"):
            raise SystemExit(f"error: {path} is for {data['version']!r}, not for model {model_id}")
        data["version"] = f"aecodec {version} model {model_id}"  # bench.rd.codec_version
        plan[KODAK_CACHE / image / "aecodec.json"] = json.dumps(data, indent=1)
    return plan


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="the exported weights file to release")
    parser.add_argument("name", help="the new model's name, e.g. aec-hp128i")
    parser.add_argument("--version", required=True, help="the aecodec version that first ships it")
    parser.add_argument("--rd", type=Path, help="a bench.rd --codecs aecodec --weights WEIGHTS --out folder run on Kodak")
    args = parser.parse_args(argv)

    from aecodec.weights import DEFAULT_MODEL, RELEASES, decoder_only, load, write_decoder_only

    if subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout:
        raise SystemExit("error: the source tree has uncommitted changes: commit or stash them first")
    if args.name in RELEASES:
        raise SystemExit(f"error: {args.name} is already released")
    blob = args.weights.read_bytes()
    sha256 = hashlib.sha256(blob).hexdigest()
    if any(r.sha256 == sha256 for r in RELEASES.values()):
        raise SystemExit(f"error: {args.weights} is already released")
    model = load(str(args.weights))
    if not model.encodes:
        raise SystemExit(f"error: {args.weights} cannot encode: a release ships whole weights")
    old = RELEASES[DEFAULT_MODEL]
    decoder_sha256 = hashlib.sha256(decoder_only(old.path.read_bytes())).hexdigest()  # what write_decoder_only writes
    plan = plan_sources(old.name, args.name, sha256, decoder_sha256, args.version, model.net.config["N"], model.net.config["M"])
    if args.rd:
        plan.update(plan_results(args.rd, args.version, sha256[:16]))

    new_file = REGISTRY.parent / f"{args.name}.pt"
    undo = (f"to undo the release: git reset -q --hard HEAD && git clean -fdq -- tests/data/conformance/{args.name} "
            f"{CORPUS.relative_to(ROOT)} {new_file.relative_to(ROOT)} {(ARCHIVE_INIT.parent / old.decoder_name).relative_to(ROOT)}")
    try:
        new_file.write_bytes(blob)
        if write_decoder_only(old.name, ARCHIVE_INIT.parent) != decoder_sha256:
            raise OSError(f"{old.name}'s decoder is not the one planned")
        for path, text in plan.items():
            path.write_text(text)
        run("git", "rm", "-q", old.source_path(ROOT).relative_to(ROOT).as_posix())
        # --force: the Kodak cache is tracked inside an ignored folder (bench/results/*/cache/)
        run("git", "add", "--force", *(path.relative_to(ROOT).as_posix() for path in [new_file, ARCHIVE_INIT.parent / old.decoder_name, *plan]))
        # Fresh processes, which import the edited registry.
        run(sys.executable, "-m", "bench.conformance", "--model", args.name)
        run(sys.executable, "-m", "bench.fuzz", "seeds", str(CORPUS))
        run("git", "checkout", "--", CORPUS.relative_to(ROOT).as_posix())  # seeds already shipped stay as they are
        kept = "{}-*-{}x{}-*.aec".format(old.name, *SEED_SIZES[0])  # a superseded model keeps its smallest seeds
        dropped = [path for path in CORPUS.glob(f"{old.name}-*.aec") if not path.match(kept)]
        if dropped:
            run("git", "rm", "-q", *(path.relative_to(ROOT).as_posix() for path in dropped))
        run("git", "add", CORPUS.relative_to(ROOT).as_posix(), f"tests/data/conformance/{args.name}")
    except (subprocess.CalledProcessError, OSError) as exc:
        raise SystemExit(f"error: {exc}; {undo}") from None
    print(f"{args.name} is the default model of aecodec {args.version}; {old.name} ships decoder-only from "
          f"aecodec-archive {archive_version_in()}. Left to do: the benchmarks, README's figures, NEWS.")


if __name__ == "__main__":
    main()
