"""Coverage-guided fuzzing of `aecodec.decode` (atheris, i.e. libFuzzer driving Python).

    python -m bench.fuzz seeds tests/data/fuzz/corpus         # (re)make the seeds of the models that encode
    nice -n 19 python -m bench.fuzz run CORPUS_DIR [libFuzzer flags, e.g. -runs=100000 -seed=1]
    python -m bench.fuzz replay FILE_OR_DIR...                 # run files through the target, no atheris

Each input is an .aec file, decoded as a user calls it, by both coders (C++ and pure Python). What an
attacker controls and recomputes for free is recomputed here too, or mutations would only ever hit
the checksums: the file CRC is fixed up before decoding, and a file whose latents decode but fail the
symbols CRC is decoded again with that CRC forged, so the synthesis and alpha stages see hostile
latents as well. Files of a released model (their model id) decode with it; any other id is replaced
by a tiny N=8/M=8 model's, which decodes in milliseconds, so most executions are cheap.

A finding is any exception other than DecodeError (MemoryError included), the two coders disagreeing,
or a decode slower than HANG_SECONDS: the input is then saved by libFuzzer (crash-*) for
tests/data/fuzz/regressions/.
"""

from __future__ import annotations

import os
import struct
import sys
import time
import zlib
from pathlib import Path
from unittest import mock

HANG_SECONDS = 5.0  # per decode of a corpus-sized file (milliseconds normally); libFuzzer's -timeout backs it up
SEED_SIZES = [(16, 16), (40, 24), (64, 64)]  # small: each execution must take milliseconds
MODES = ["L", "LA", "RGB", "RGBA"]
# Modules instrumented for coverage; aecodec must be imported first inside the instrumenting block.
AECODEC_MODULES = ["aecodec", "aecodec.api", "aecodec.format", "aecodec.entropy", "aecodec.image", "aecodec.coder",
                   "aecodec.coder.python", "aecodec.coder.native", "aecodec.coder.tables", "aecodec.refine", "aecodec.weights"]


def save_tiny_model(path: Path) -> None:
    """A tiny random model (N=8, M=8) with raised gains, so latents span many symbols, escapes included."""
    import torch

    from aecodec.model import AECModel
    from aecodec.weights import save_shipped

    torch.manual_seed(0)
    net = AECModel(N=8, M=8)
    with torch.no_grad():
        net.log_gain.add_(4.0)
        net.log_inv_gain.sub_(4.0)
    save_shipped(net, path)


class Finding(Exception):
    """Not a crash of the interpreter, but a bug all the same: the coders disagree or a decode hangs."""


def _file_crc_offset(data: bytes) -> int | None:
    """Where the file CRC sits, if the header can be walked that far (sizes unchecked)."""
    from aecodec.format import LOSSLESS_VERSION, REFINED_VERSION, ByteReader

    reader = ByteReader(data, "file")
    try:
        version = reader.take(5)[4]  # magic, version
        lossless = version == LOSSLESS_VERSION
        refined = version == REFINED_VERSION
        reader.take(2 if lossless else 13 if refined else 11)  # mode and coding, or mode, model id and qualities
        for _ in range(3 if lossless else 7 if refined else 6):  # width, height, stream lengths
            reader.varint()
        if not lossless:
            reader.take(4)  # symbols CRC
    except Exception:
        return None
    return reader.pos if reader.pos + 4 <= len(data) else None


def with_checksums(data: bytes, symbols_crc: int | None = None) -> bytes:
    """data with its file CRC recomputed (and its symbols CRC replaced, if given)."""
    at = _file_crc_offset(data)
    if at is None:
        return data
    head = bytearray(data[:at])
    if symbols_crc is not None:
        head[at - 4 : at] = struct.pack("<I", symbols_crc)
    crc = zlib.crc32(data[at + 4 :], zlib.crc32(bytes(head)))
    return bytes(head) + struct.pack("<I", crc) + data[at + 4 :]


class Target:
    """The fuzz target: decode(data) with both coders, under the rules in the module docstring."""

    def __init__(self, tiny):
        import aecodec
        from aecodec import entropy
        from aecodec.coder import BACKENDS
        from aecodec.format import REFINED_VERSION, VERSION
        from aecodec.weights import RELEASES

        self.decode = aecodec.decode
        self.tiny = tiny
        self.released_ids = {release.model_id for release in RELEASES.values()}
        self.learned_versions = (VERSION, REFINED_VERSION)  # only learned files name a model
        self.backends = sorted(BACKENDS)
        # The symbols CRC the decoder computed last: what an attacker would write into the header.
        self.last_symbols_crc = None
        original = entropy.symbols_crc

        def recording(*args):
            self.last_symbols_crc = original(*args)
            return self.last_symbols_crc

        self.recording = mock.patch.object(entropy, "symbols_crc", recording)

    def __call__(self, data: bytes) -> None:
        if len(data) >= 14 and data[4] in self.learned_versions and data[6:14] not in self.released_ids:
            data = data[:6] + self.tiny.model_id + data[14:]
        weights = None if data[6:14] in self.released_ids else self.tiny
        data = with_checksums(data)
        self.last_symbols_crc = None
        with self.recording:
            outcome = self._decode_all(data, weights)
        if outcome == "symbols CRC" and self.last_symbols_crc is not None:
            self._decode_all(with_checksums(data, self.last_symbols_crc), weights)

    def _decode_all(self, data: bytes, weights):
        from aecodec.errors import DecodeError

        outcomes = []
        for backend in self.backends:
            start = time.perf_counter()
            try:
                image = self.decode(data, weights=weights, backend=backend)
                outcome = (image.mode, image.size, image.tobytes())
            except DecodeError as exc:
                outcome = "symbols CRC" if "latents fail their checksum" in str(exc) else "DecodeError"
            seconds = time.perf_counter() - start
            if seconds > HANG_SECONDS:
                raise Finding(f"{backend} decode of a {len(data)}-byte file took {seconds:.1f} s")
            outcomes.append(outcome)
        if any(o != outcomes[0] for o in outcomes):
            raise Finding(f"coders {self.backends} disagree: {[o if isinstance(o, str) else o[:2] for o in outcomes]}")
        return outcomes[0]


def make_seeds(out: Path, tiny) -> list[Path]:
    """Small valid files of every mode, with the tiny model and every released one that encodes, at a few sizes
    and qualities (decoder-only releases keep the seeds they were given while they encoded)."""
    import numpy as np

    import aecodec
    from aecodec.weights import DEFAULT_MODEL, RELEASES, load

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = []
    models = [("tiny", tiny, (1.0, 6.0, 10.0))] + [(name, load(name), release.qualities) for name, release in RELEASES.items()
                                                         if release.encodes]
    for name, model, qualities in models:
        # Superseded models keep the smallest size only: every mode of every model stays covered, and
        # each release adds ~3 KB to the corpus instead of ~13 KB.
        sizes = SEED_SIZES if name in ("tiny", DEFAULT_MODEL) else SEED_SIZES[:1]
        for mode in MODES:
            for i, (width, height) in enumerate(sizes):
                yy, xx = np.mgrid[0:height, 0:width]
                channels = len(mode)
                image = (xx[..., None] * 7 + yy[..., None] * 3 * np.arange(1, channels + 1)) % 256
                image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
                quality = qualities[i % len(qualities)]
                data = aecodec.encode(image if channels > 1 else image[..., 0], quality, mode="learned", weights=model)
                path = out / f"{name}-{mode}-{width}x{height}-q{quality:g}.aec"
                path.write_bytes(data)
                written.append(path)
    for mode in MODES:  # lossless files (format version 2): WebP lossless, and PNG for 16-bit grey
        image = rng.integers(0, 256, size=(24, 16, len(mode)), dtype=np.uint8)
        path = out / f"lossless-{mode}-16x24.aec"
        path.write_bytes(aecodec.encode(image if len(mode) > 1 else image[..., 0], mode="lossless"))
        written.append(path)
    path = out / "lossless-I16-16x24.aec"
    path.write_bytes(aecodec.encode(rng.integers(0, 65536, size=(24, 16), dtype=np.uint16), mode="lossless"))
    written.append(path)
    for mode in MODES:  # refined files (format version 3), tiny model: its refinement layer is the same code
        image = np.clip(rng.normal(128, 40, size=(20, 28, len(mode))), 0, 255).astype(np.uint8)
        path = out / f"tiny-{mode}-28x20-q10.aec"
        path.write_bytes(aecodec.encode(image if len(mode) > 1 else image[..., 0], 10.0, mode="learned", weights=tiny))
        written.append(path)
    return written


def _files(paths) -> list[Path]:
    found = []
    for path in map(Path, paths):
        found.extend(sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path])
    return found


def tiny_model():
    """The tiny model, loaded (its weights file is only needed while loading)."""
    import tempfile

    from aecodec.weights import load

    with tempfile.TemporaryDirectory(prefix="aecodec-fuzz-") as folder:
        path = Path(folder) / "tiny.pt"
        save_tiny_model(path)
        return load(path)


def replay(paths) -> int:
    """Runs every file through the target; returns how many; raises on the first finding."""
    target = Target(tiny_model())
    files = _files(paths)
    for path in files:
        try:
            target(path.read_bytes())
        except Exception as exc:
            raise Finding(f"{path}: {type(exc).__name__}: {exc}") from exc
    return len(files)


def _one_thread() -> None:
    """Inputs are tiny: thread hand-offs (on a shared machine) cost more than they save."""
    import torch

    torch.set_num_threads(1)
    os.environ["AECODEC_THREADS"] = "1"


def run(argv: list[str]) -> None:
    """libFuzzer over the target; argv: corpus dirs and libFuzzer flags (see -help=1)."""
    import atheris

    with atheris.instrument_imports(include=["aecodec"]):
        import importlib

        for name in AECODEC_MODULES:
            importlib.import_module(name)
    _one_thread()
    target = Target(tiny_model())
    atheris.Setup([sys.argv[0], "-rss_limit_mb=6144", *argv], target)
    atheris.Fuzz()


def main(argv: list[str]) -> None:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "seeds" and len(rest) == 1:
        for path in make_seeds(Path(rest[0]), tiny_model()):
            print(f"{path} {path.stat().st_size} bytes")
    elif command == "run":
        run(rest)
    elif command == "replay" and rest:
        _one_thread()
        print(f"{replay(rest)} files decoded without a finding")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
