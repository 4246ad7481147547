"""The native extension: built where it should be, and its fused preparation and CUDA paths match Python."""

import os

import numpy as np
import pytest
import torch

import aecodec
from aecodec import _native
from aecodec.coder import BACKENDS, encode_stream, prepare, split_stream
from test_coder import random_input, random_tables

needs_native = pytest.mark.skipif(not _native.HAS_EXT, reason="native extension not built")
needs_gpu = pytest.mark.skipif(not _native.cuda_usable(), reason="no CUDA device")


def test_extension_is_built():
    """An install that silently fell back to pure Python (a broken .cpp, an ABI mismatch) fails here."""
    if os.environ.get("AECODEC_NO_EXT") == "1" or os.environ.get("AECODEC_BACKEND") == "python":
        pytest.skip("pure-Python run requested")
    assert aecodec.HAS_EXT, _native.IMPORT_ERROR


def test_forced_python_backend(monkeypatch):
    import subprocess
    import sys

    env = dict(os.environ, AECODEC_BACKEND="python")
    done = subprocess.run([sys.executable, "-c", "import aecodec; print(aecodec.backend_name())"], env=env,
                          capture_output=True, text=True)
    assert done.stdout.strip() == "python", done.stderr


def _latents(seed, size):
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, count=12, max_symbols=60)
    indexes = torch.from_numpy(rng.integers(0, 12, size).astype(np.int32))
    values = torch.from_numpy((rng.standard_t(2, size) * 8).astype(np.float32))
    values[:4] = torch.tensor([0.5, 1.5, -2.5, 3e12])  # ties round to even; a huge value clamps and escapes
    means = torch.from_numpy(np.round(rng.normal(0, 4, size) * 256) / 256)
    means[:4] = 0
    return tables, values, means, indexes


@needs_native
@pytest.mark.parametrize("seed", range(4))
def test_prepare_matches_python(seed):
    tables, values, means, indexes = _latents(seed, 5000)
    py_sym, py_q = prepare(values, means, indexes, tables, backend="python")
    nat_sym, nat_q = prepare(values, means, indexes, tables, backend="native")
    np.testing.assert_array_equal(py_sym, nat_sym)
    np.testing.assert_array_equal(py_q, nat_q)
    assert list(py_q[:4]) == [0, 2, -2, 2**30]
    assert (py_sym == tables.escape_symbols[indexes.numpy()]).any()


@needs_native
def test_prepare_rejects_bad_indexes():
    tables, values, means, indexes = _latents(0, 10)
    indexes[3] = 99
    for backend in BACKENDS:
        with pytest.raises(ValueError):
            prepare(values, means, indexes, tables, backend=backend)


@needs_gpu
@pytest.mark.parametrize("seed", range(3))
def test_cuda_matches_cpu(seed):
    from aecodec.coder import native

    tables, values, means, indexes = _latents(seed, 20000)
    cpu = prepare(values, means, indexes, tables, backend="python")
    gpu = native.prepare(values.cuda(), means.cuda(), indexes.cuda(), tables)
    np.testing.assert_array_equal(cpu[0], gpu[0])
    np.testing.assert_array_equal(cpu[1], gpu[1])
    symbols, idx = random_input(np.random.default_rng(seed), tables, 30000)
    for lanes in (1, 7, 256):
        data = encode_stream(symbols, idx, tables, lanes=lanes, backend="python")
        from aecodec.coder import decode_stream

        words, payload = split_stream(data)
        decoded = native.decode(payload, words, idx, tables, device="cuda")
        np.testing.assert_array_equal(decoded, symbols)
        np.testing.assert_array_equal(decode_stream(data, idx, tables, backend="python"), symbols)


def _threaded_round_trip(seed):
    """Encode and decode on 2 native threads: (stream, decoded, the Python coder's stream, the symbols)."""
    from aecodec.coder import native

    rng = np.random.default_rng(seed)
    tables = random_tables(rng)
    symbols, indexes = random_input(rng, tables, 20000)
    data = encode_stream(symbols, indexes, tables, lanes=6, backend="native")
    lane_words, payload = split_stream(data)
    decoded = native.decode(payload, lane_words, indexes, tables, threads=2, device="cpu")
    return data, decoded, encode_stream(symbols, indexes, tables, lanes=6, backend="python"), symbols


@needs_native
def test_concurrent_calls_share_or_bypass_the_worker_pool(monkeypatch):
    """Python threads call the coder at once (it releases the GIL): one gets the pool, the others their own threads."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("AECODEC_THREADS", "2")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_threaded_round_trip, [s % 3 for s in range(24)]))
    for data, decoded, python_data, symbols in results:
        assert data == python_data
        np.testing.assert_array_equal(decoded, symbols)


def _child_round_trip(queue):
    data, decoded, python_data, symbols = _threaded_round_trip(1)
    queue.put(data == python_data and np.array_equal(decoded, symbols))


@needs_native
def test_forked_child_gets_a_working_pool():
    """A fork copies the pool but not its threads: the child must start its own, not wait on the parent's."""
    import multiprocessing

    _threaded_round_trip(0)  # the parent's pool now has workers
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_round_trip, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in the native coder")
    assert child.exitcode == 0 and queue.get(timeout=5)
