"""Release a trained model as the new default: python -m bench.release WEIGHTS NAME --version X.Y.Z [--rd DIR].

The mechanical steps of README "The wide model" in one run, in a source tree with the dev install:
- WEIGHTS (an exported weights file that encodes) becomes aecodec/weights/NAME.pt, the new default model;
- the previous default ships decoder-only from then on: its decoder goes into archive/aecodec_archive/ and
  its RELEASES entry gains decoder_sha256 and the archive's next version, which aecodec_archive.__version__
  and aecodec's `aecodec-archive>=` requirement become; aecodec.__version__ becomes X.Y.Z;
- commands that start from the default (`--init-from`, `--init`) in README.md and bench/device_train.py
  name NAME;
- NAME's conformance files (bench.conformance) and fuzz seeds (bench.fuzz seeds; the superseded model
  keeps its smallest ones);
- with --rd, DIR's cached Kodak results for WEIGHTS (`bench.rd --codecs aecodec --weights WEIGHTS --out
  DIR`) become the committed cache's aecodec results, so `python -m bench.rd --images KODAK` reruns from it.
Everything it writes is staged with git; the benchmarks, README's figures and NEWS are left to do.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "aecodec" / "weights" / "__init__.py"
CORPUS = ROOT / "tests" / "data" / "fuzz" / "corpus"
KODAK_CACHE = ROOT / "bench" / "results" / "kodak" / "cache"


def add_release(registry: str, old: str, new: str, sha256: str, decoder_sha256: str, archive: int, version: str) -> str:
    """The registry's source with `old`'s entry decoder-only (from the archive version `archive`), an entry
    for `new` (same config as `old`) appended to RELEASES and `new` the default."""
    entry = re.compile(r'( *)Release\("%s", "%s\.pt", "[0-9a-f]{64}",\n( *)(\d+, \d+, \([^)]*\)), "[^"]+"\),\n'
                       % (re.escape(old), re.escape(old)))
    found = entry.search(registry)
    if found is None:
        raise SystemExit(f"error: no whole-weights entry for {old} in {REGISTRY} (is it the default?)")
    indent, inner, config = found.groups()
    replacement = (found.group(0)[:-3] + f',\n{inner}decoder_sha256="{decoder_sha256}", archive={archive}),\n'
                   f'{indent}Release("{new}", "{new}.pt", "{sha256}",\n{inner}{config}, "{version}"),\n')
    registry = registry[:found.start()] + replacement + registry[found.end():]
    registry, count = re.subn(r'^DEFAULT_MODEL = "%s"' % re.escape(old), f'DEFAULT_MODEL = "{new}"', registry, flags=re.M)
    if count != 1:
        raise SystemExit(f"error: {old} is not DEFAULT_MODEL in {REGISTRY}")
    return registry


def substitute(path: Path, pattern: str, replacement: str, count: int | None = 1) -> None:
    text, made = re.subn(pattern, replacement, path.read_text(), flags=re.M)
    if count is not None and made != count:
        raise SystemExit(f"error: expected {count} match(es) of {pattern!r} in {path}, found {made}")
    path.write_text(text)


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="the exported weights file to release")
    parser.add_argument("name", help="the new model's name, e.g. aec-hp128i")
    parser.add_argument("--version", required=True, help="the aecodec version that first ships it")
    parser.add_argument("--rd", type=Path, help="a bench.rd --weights WEIGHTS --out folder run on Kodak")
    args = parser.parse_args(argv)

    import aecodec_archive
    from aecodec.weights import DEFAULT_MODEL, RELEASES, load, write_decoder_only

    if args.name in RELEASES:
        raise SystemExit(f"error: {args.name} is already released")
    if not load(str(args.weights)).encodes:
        raise SystemExit(f"error: {args.weights} cannot encode: a release ships whole weights")
    old, archive = DEFAULT_MODEL, int(aecodec_archive.__version__) + 1
    blob = args.weights.read_bytes()
    sha256 = hashlib.sha256(blob).hexdigest()
    new_file = REGISTRY.parent / f"{args.name}.pt"
    new_file.write_bytes(blob)
    decoder_sha256 = write_decoder_only(old)
    REGISTRY.write_text(add_release(REGISTRY.read_text(), old, args.name, sha256, decoder_sha256, archive, args.version))
    substitute(ROOT / "aecodec" / "__init__.py", r'^__version__ = "[^"]+"', f'__version__ = "{args.version}"')
    substitute(ROOT / "archive" / "aecodec_archive" / "__init__.py", r'^__version__ = "\d+"', f'__version__ = "{archive}"')
    substitute(ROOT / "pyproject.toml", r'"aecodec-archive>=\d+"', f'"aecodec-archive>={archive}"')
    for path in (ROOT / "README.md", ROOT / "bench" / "device_train.py"):
        substitute(path, r"(--init(?:-from)? )%s\b" % re.escape(old), rf"\g<1>{args.name}", count=None)
    run("git", "rm", "-q", f"aecodec/weights/{old}.pt")
    run("git", "add", new_file.relative_to(ROOT).as_posix(), f"archive/aecodec_archive/{RELEASES[old].decoder_name}",
        "aecodec/weights/__init__.py", "aecodec/__init__.py", "archive/aecodec_archive/__init__.py", "pyproject.toml",
        "README.md", "bench/device_train.py")

    run(sys.executable, "-m", "bench.conformance", "--model", args.name)
    run(sys.executable, "-m", "bench.fuzz", "seeds", str(CORPUS))
    run("git", "checkout", "--", CORPUS.relative_to(ROOT).as_posix())  # seeds already shipped stay as they are
    kept = f"{old}-*-16x16-*.aec"  # a superseded model keeps its smallest seeds (bench.fuzz.make_seeds)
    dropped = [path for path in CORPUS.glob(f"{old}-*.aec") if not path.match(kept)]
    if dropped:
        run("git", "rm", "-q", *(path.relative_to(ROOT).as_posix() for path in dropped))
    run("git", "add", CORPUS.relative_to(ROOT).as_posix(), f"tests/data/conformance/{args.name}")

    if args.rd:
        label = re.compile(r'"aecodec [^" ]+ model ')
        for result in sorted((args.rd / "cache").glob("*/aecodec.json")):
            target = KODAK_CACHE / result.parent.name / "aecodec.json"
            if not target.parent.is_dir():
                raise SystemExit(f"error: {result} is not for a Kodak image of {KODAK_CACHE}")
            target.write_text(label.sub(f'"aecodec {args.version} model ', result.read_text()))
        run("git", "add", KODAK_CACHE.relative_to(ROOT).as_posix())
    print(f"{args.name} is the default model of aecodec {args.version}; {old} ships decoder-only from "
          f"aecodec-archive {archive}. Left to do: the benchmarks, README's figures, NEWS.")


if __name__ == "__main__":
    main()
