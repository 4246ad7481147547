"""Entropy-coder throughput on one Kodak-sized latent, every coder on the same symbols and tables.

    python -m bench.coder [--repeats 15] [--json out.json]

Symbols: round(y), y ~ N(0, s) with s log-uniform in [0.11, 20] per element, 192 x 32 x 48 (a
hyperprior latent of a 768x512 image); tables: compressai's GaussianConditional CDFs (64 scales,
16-bit). Coders: ours (C++ on 1 and 2 threads, pure Python), compressai's RansEncoder/RansDecoder (lists
prebuilt, as its own compress() would pass them) and constriction's AnsCoder with one Categorical
per table (symbols grouped by table inside the timed encode). Timings are medians of rounds that
run every coder back to back (each timed after 0.2 s of running), so the ratios against compressai come from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def make_latent(seed: int = 0, shape=(192, 32, 48)):
    from compressai.entropy_models import GaussianConditional
    from compressai.models.google import get_scale_table

    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    gc.update()
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(0.11), np.log(20), shape)).astype(np.float32)
    values = np.round(rng.normal(0, scales)).astype(np.int32)
    indexes = gc.build_indexes(torch.from_numpy(scales)).numpy().astype(np.int32).ravel()
    return gc, values.ravel(), indexes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import constriction
    from compressai.ans import RansDecoder, RansEncoder

    from aecodec import _native
    from aecodec.coder import python as py_coder
    from aecodec.coder.tables import CdfTables, default_lanes

    gc, values, indexes = make_latent()
    tables = CdfTables(gc._quantized_cdf, gc._cdf_length, gc._offset)
    # Values outside a table become its last (escape) symbol, for every coder alike.
    symbols = np.clip(values - tables.offsets[indexes], 0, tables.lengths[indexes] - 2).astype(np.int32)
    n = symbols.size
    lanes = default_lanes(n)

    # compressai: its C++ coder takes Python lists and applies the offsets itself.
    cai_values = (symbols + tables.offsets[indexes]).tolist()
    cai_indexes = indexes.tolist()
    cai_cdfs = gc._quantized_cdf.tolist()
    cai_lengths = gc._cdf_length.reshape(-1).int().tolist()
    cai_offsets = gc._offset.reshape(-1).int().tolist()

    # constriction: one categorical model per table, from the same integer CDFs.
    used = np.unique(indexes)
    models = {}
    for t in used:
        freq = np.diff(tables.cdfs[t, : tables.lengths[t]]).astype(np.float64)
        models[t] = constriction.stream.model.Categorical(freq / freq.sum(), perfect=False)

    def constriction_encode():
        order = np.argsort(indexes, kind="stable")
        grouped = symbols[order]
        bounds = np.searchsorted(indexes[order], used, side="left").tolist() + [n]
        coder = constriction.stream.stack.AnsCoder()
        for k in range(len(used) - 1, -1, -1):
            coder.encode_reverse(grouped[bounds[k] : bounds[k + 1]], models[used[k]])
        return coder.get_compressed(), order, bounds

    def constriction_decode(state):
        compressed, order, bounds = state
        coder = constriction.stream.stack.AnsCoder(compressed)
        out = np.empty(n, dtype=np.int32)
        for k in range(len(used)):
            out[order[bounds[k] : bounds[k + 1]]] = coder.decode(models[used[k]], bounds[k + 1] - bounds[k])
        return out

    coders = {
        "compressai": (
            lambda: RansEncoder().encode_with_indexes(cai_values, cai_indexes, cai_cdfs, cai_lengths, cai_offsets),
            lambda data: RansDecoder().decode_with_indexes(data, cai_indexes, cai_cdfs, cai_lengths, cai_offsets),
        ),
        "constriction": (constriction_encode, constriction_decode),
        f"python ({lanes} lanes)": (
            lambda: py_coder.encode(symbols, indexes, tables, lanes),
            lambda enc: py_coder.decode(enc[0], enc[1], indexes, tables),
        ),
    }
    if _native.HAS_EXT:
        from aecodec.coder import native

        for threads in (1, 2):
            coders[f"aecodec C++ {threads} thread{'s' * (threads > 1)} ({lanes} lanes)"] = (
                lambda t=threads: native.encode(symbols, indexes, tables, lanes, threads=t),
                lambda enc, t=threads: native.decode(enc[0], enc[1], indexes, tables, threads=t, device="cpu"),
            )

    sizes, times = {}, {name: {"encode": [], "decode": []} for name in coders}
    for _ in range(args.repeats + 1):  # the first round warms up (builds the decoders' lookups) and checks correctness
        for name, (enc, dec) in coders.items():
            # Each coder runs for >= 0.2 s before its timed call: a coder timed right after another one's
            # single-threaded 100 ms found this VM's idle second core slow to wake (2 threads measured
            # slower than 1), which a codec that has just run its networks on both cores never sees.
            warm_until = time.perf_counter() + 0.2
            while True:
                t0 = time.perf_counter()
                encoded = enc()
                t1 = time.perf_counter()
                decoded = dec(encoded)
                t2 = time.perf_counter()
                if t0 > warm_until:
                    break
            times[name]["encode"].append(t1 - t0)
            times[name]["decode"].append(t2 - t1)
            expected = symbols + tables.offsets[indexes] if name == "compressai" else symbols
            if not np.array_equal(np.asarray(decoded, dtype=np.int64), expected):
                raise SystemExit(f"{name} failed its round trip")
            payload = encoded if isinstance(encoded, bytes) else encoded[0]
            sizes[name] = len(payload) if isinstance(payload, bytes) else payload.nbytes

    results = {}
    base = {op: statistics.median(times["compressai"][op][1:]) for op in ("encode", "decode")}
    print(f"{n} symbols (192x32x48), {len(used)} of {len(tables.lengths)} tables used, median of {args.repeats} rounds\n")
    print(f"| coder | encode ms | encode Msym/s | x compressai | decode ms | decode Msym/s | x compressai | bits/sym |")
    print("|---|---|---|---|---|---|---|---|")
    for name in coders:
        row = {op: statistics.median(times[name][op][1:]) for op in ("encode", "decode")}
        results[name] = {
            **{f"{op}_ms": 1000 * row[op] for op in row},
            **{f"{op}_msym_s": n / row[op] / 1e6 for op in row},
            **{f"{op}_vs_compressai": base[op] / row[op] for op in row},
            **{f"{op}_best_ms": 1000 * min(times[name][op][1:]) for op in row},
            "bits_per_symbol": 8 * sizes[name] / n,
        }
        r = results[name]
        print(f"| {name} | {r['encode_ms']:.2f} | {r['encode_msym_s']:.1f} | {r['encode_vs_compressai']:.2f} | "
              f"{r['decode_ms']:.2f} | {r['decode_msym_s']:.1f} | {r['decode_vs_compressai']:.2f} | {r['bits_per_symbol']:.4f} |")
    if _native.HAS_EXT:
        one, two = (results[f"aecodec C++ {t} thread{'s' * (t > 1)} ({lanes} lanes)"] for t in (1, 2))
        py = results[f"python ({lanes} lanes)"]
        # Medians are the headline; fastest rounds too, since this kind of VM's speed drifts between rounds.
        def ratios(slow, fast):
            return ", ".join(f"{op} {slow[op + '_ms'] / fast[op + '_ms']:.2f}x (fastest rounds "
                             f"{slow[op + '_best_ms'] / fast[op + '_best_ms']:.2f}x)" for op in ("encode", "decode"))

        print(f"\nC++ 2 threads / 1 thread: {ratios(one, two)}")
        print(f"Python / C++ 1 thread ({lanes} lanes): {ratios(py, one)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
