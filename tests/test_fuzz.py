"""Fuzzing the stream decoders and the whole decoder with mutated inputs (seeded, bounded here).

AECODEC_FUZZ_ITERATIONS raises the count for a long run: each case must end in DecodeError or a
well-formed result, never a crash or a hang, and the Python and C++ decoders must agree on it.
"""

import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import aecodec
from aecodec import _native, coder
from aecodec import format as aec
from aecodec import image as images
from aecodec.entropy import EscapeReader
from aecodec.errors import DecodeError
from aecodec.format import varint
from bench import fuzz as bench_fuzz
from tests.conftest import natural_like

ITERATIONS = int(os.environ.get("AECODEC_FUZZ_ITERATIONS", 200))
BACKENDS = ["python"] + (["native"] if _native.HAS_EXT else [])


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(5))
        pos = int(rng.integers(len(data) + 1))
        if op == 0 and data:  # overwrite bytes
            data[min(pos, len(data) - 1)] = int(rng.integers(256))
        elif op == 1:  # truncate
            del data[pos:]
        elif op == 2:  # insert random bytes
            data[pos:pos] = rng.integers(256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 3:  # delete a run
            del data[pos : pos + int(rng.integers(1, 9))]
        else:  # a huge varint (lane counts, word counts)
            data[pos:pos] = b"\xff\xff\xff\xff\x7f"
    return bytes(data)


def outcome(fn):
    try:
        return fn()
    except DecodeError:
        return DecodeError


def test_stream_decoders_survive_and_agree(tiny_model):
    tables = tiny_model.latents.y_tables
    rng = np.random.default_rng(1)
    n = 3000
    indexes = rng.integers(len(tables.lengths), size=n).astype(np.int32)
    symbols = rng.integers(0, tables.lengths[indexes] - 1).astype(np.int32)
    stream = coder.encode_stream(symbols, indexes, tables, lanes=5)
    accepted = 0
    for _ in range(ITERATIONS):
        damaged = mutate(stream, rng)
        results = [outcome(lambda b=b: coder.decode_stream(damaged, indexes, tables, backend=b)) for b in BACKENDS]
        if results[0] is DecodeError:
            assert all(r is DecodeError for r in results)
        else:
            accepted += 1
            for r in results:
                assert r is not DecodeError and r.shape == (n,) and np.array_equal(r, results[0])
                assert np.all(r < tables.lengths[indexes] - 1)
    assert accepted < ITERATIONS  # the mutations do reach the error paths


@pytest.fixture(scope="module")
def valid_file(tiny_model):
    return aecodec.encode(natural_like(64, 80, seed=5), 4.0, mode="learned", weights=tiny_model)


def test_whole_decoder_survives_damaged_streams(tiny_model, valid_file):
    """Damage inside the streams, container checksum recomputed: only the decoder's own checks stand."""
    header, streams = aec.unpack(valid_file)
    rng = np.random.default_rng(2)
    names = ["z", "y", "escapes"]
    for i in range(ITERATIONS // 4):
        damaged = dict(streams)
        name = names[i % len(names)]
        damaged[name] = mutate(streams[name], rng)
        data = aec.pack(header, damaged)
        for backend in BACKENDS:
            result = outcome(lambda: aecodec.decode(data, weights=tiny_model, backend=backend))
            assert result is DecodeError or result.size == (header.width, header.height)


# --- The coverage-guided harness (bench/fuzz.py): its corpus, its crash regressions, a short run ---

FUZZ_DATA = Path(__file__).parent / "data" / "fuzz"


def test_corpus_and_regressions_decode_without_finding():
    """Every saved input, through both coders with checksums fixed up and forged, as the fuzzer runs it."""
    assert bench_fuzz.replay([FUZZ_DATA / "corpus", FUZZ_DATA / "regressions"]) >= 25


def test_corpus_covers_every_mode_of_every_released_model_and_format_version():
    from aecodec.weights import RELEASES

    datas = [path.read_bytes() for path in (FUZZ_DATA / "corpus").iterdir()]
    files = [aec.unpack(data)[0] for data in datas]
    for release in RELEASES.values():
        assert {h.mode for h in files if h.model_id == release.model_id} == set(aec.MODES)
    for version in aec.VERSIONS:
        assert {h.mode for data, h in zip(datas, files) if data[4] == version} >= set(aec.MODES)
    assert sum(path.stat().st_size for path in (FUZZ_DATA / "corpus").iterdir()) < 100_000


def test_harness_recomputes_the_file_crc_of_every_format_version():
    for path in (FUZZ_DATA / "corpus").iterdir():
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # damage the payload: the file CRC no longer matches
        aec.unpack(bench_fuzz.with_checksums(bytes(data)))


def test_short_fuzz_run(tmp_path):
    """A short seeded libFuzzer run over a copy of the corpus (the long runs: README, Reliability)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ_DATA / "corpus", corpus)
    result = subprocess.run([sys.executable, "-m", "bench.fuzz", "run", str(corpus), "-runs=300", "-seed=1",
                             f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 300 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))


def test_harness_reports_a_coder_disagreement(tiny_model, valid_file, monkeypatch):
    """The harness's own check can fail: a native coder that returns other symbols is a finding."""
    if "native" not in BACKENDS:
        pytest.skip("no native coder to disagree with")
    from aecodec.coder import native

    real = native.decode
    monkeypatch.setattr(native, "decode", lambda *args, **kwargs: real(*args, **kwargs) ^ 1)
    with pytest.raises(bench_fuzz.Finding, match="disagree"):
        bench_fuzz.Target(tiny_model)(valid_file)


# --- Resource limits: sizes in the header and the streams are checked against the data first ---


def test_huge_declared_image_with_short_streams_is_refused_before_allocating(tiny_model, valid_file):
    header, streams = aec.unpack(valid_file)
    header.width, header.height = 65536, 4096
    data = aec.pack(header, {**streams, "z": streams["z"][:30]})
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="z stream is too short for the image size"):
            aecodec.decode(data, weights=tiny_model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the image's z indexes alone would be 16 MB


def test_stream_size_bound_holds_for_the_cheapest_symbols(tiny_model):
    """The bound the size check halves: no rANS stream of n symbols is shorter than n cheapest code lengths."""
    for tables in (tiny_model.latents.z_tables, tiny_model.latents.y_tables):
        cheapest = int(np.argmin(tables.min_bits()))
        freqs = np.diff(tables.cdfs[cheapest, : tables.lengths[cheapest]])
        for n in (10, 10_000, 300_000):
            symbols = np.full(n, int(np.argmax(freqs)), dtype=np.int32)
            stream = coder.encode_stream(symbols, np.full(n, cheapest, dtype=np.int32), tables, lanes=1)
            assert 8 * len(stream) >= n * tables.min_bits()[cheapest]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lane_word_counts_that_overflow_int64_are_refused(tiny_model, backend):
    """Regression (found while writing the harness): two lanes of 2**62 words summed to 4 in int64, the
    payload's size, and the C++ decoder read far outside the payload (a segfault)."""
    stream = varint(2) + varint(2**62 - 2) + varint(2**62) + b"\0\0\1\0"
    with pytest.raises(DecodeError, match="lane table"):
        coder.decode_stream(stream, np.zeros(10, np.int32), tiny_model.latents.z_tables, backend=backend)
    with pytest.raises(DecodeError, match="lane table"):  # a count beyond int64 altogether
        coder.decode_stream(varint(1) + varint(2**69) + b"\0" * 8, np.zeros(10, np.int32),
                            tiny_model.latents.z_tables, backend=backend)


def test_native_decoder_checks_lane_table_itself(tiny_model):
    if not _native.HAS_EXT:
        pytest.skip("no native coder")
    import torch

    from aecodec.coder.native import _tensors

    tables = _tensors(tiny_model.latents.z_tables)
    for words in ([2**62 - 2, 2**62], [], [-1, 2]):
        with pytest.raises(ValueError):
            _native._C.rans_decode(torch.tensor([0, 0, 1, 0], dtype=torch.uint8), torch.tensor(words, dtype=torch.int64),
                                   torch.zeros(10, dtype=torch.int32), tables["cdfs"], tables["lengths"],
                                   tables["lut"], 1)


def test_more_escapes_than_escape_bytes_is_refused():
    reader = EscapeReader(b"\x02\x04")
    with pytest.raises(DecodeError, match="too short for its 3 escaped values"):
        reader.take(3)
    assert reader.take(2) == [1, 2]


def _png_declaring(width: int, height: int) -> bytes:
    """A greyscale PNG header declaring width x height, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_alpha_plane_of_another_size_is_refused_before_its_pixels_load():
    """9000x9000 (81 MP, under Pillow's bomb limit): refused on its size, not by failing to load it."""
    with pytest.raises(DecodeError, match="does not match the image size"):
        images.decode_alpha(_png_declaring(9000, 9000), 16, 16)


def test_lossless_payload_of_another_size_is_refused_before_its_pixels_load():
    from aecodec import lossless

    with pytest.raises(DecodeError, match="a 9000x9000 image, its header says 16x16"):
        lossless.decode("L", "png", 16, 16, _png_declaring(9000, 9000))
