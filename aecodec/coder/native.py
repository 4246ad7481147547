"""The C++ coder (aecodec._C): same interface and bytes as coder/python.py, lanes on threads."""

from __future__ import annotations

import os

import numpy as np
import torch

from .._native import _C, cuda_usable
from .tables import CdfTables


def default_threads() -> int:
    return int(os.environ.get("AECODEC_THREADS", 0)) or os.cpu_count() or 1


def _tensors(tables: CdfTables, device: str = "cpu") -> dict:
    """Torch copies of the tables (and decode LUT) on `device`, built once per device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one copy
        device = torch.device("cuda", torch.cuda.current_device())
    return tables.cached(("torch", str(device)), lambda t: {
        "cdfs": torch.from_numpy(t.cdfs).to(device),
        "lengths": torch.from_numpy(t.lengths).to(device),
        "offsets": torch.from_numpy(t.offsets).to(device),
        "lut": torch.from_numpy(t.bucket_lut().view(np.int16)).to(device),
    })


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables, lanes: int, threads: int | None = None):
    t = _tensors(tables)
    payload, lane_words = _C.rans_encode(torch.from_numpy(symbols), torch.from_numpy(indexes), t["cdfs"], t["lengths"],
                                         lanes, threads or default_threads())
    return payload.numpy().tobytes(), lane_words.numpy()


def decode(payload: bytes, lane_words: np.ndarray, indexes: np.ndarray, tables: CdfTables,
           threads: int | None = None, device: str | None = None) -> np.ndarray:
    """Decodes on the GPU (one thread per lane) when device is 'cuda' or, by default, when one is usable."""
    device = device or ("cuda" if cuda_usable() else "cpu")
    payload_t = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
    words_t = torch.from_numpy(np.ascontiguousarray(lane_words, dtype=np.int64))
    # A corrupt stream raises _C.CorruptStreamError, a DecodeError; a ValueError would be our bug.
    if device == "cpu":
        t = _tensors(tables)
        out = _C.rans_decode(payload_t, words_t, torch.from_numpy(indexes), t["cdfs"], t["lengths"], t["lut"],
                             threads or default_threads())
    else:
        t = _tensors(tables, device)
        out = _C.rans_decode_cuda(payload_t.to(device), words_t, torch.from_numpy(indexes).to(device), t["cdfs"],
                                  t["lengths"], t["lut"])
    return out.cpu().numpy()


def prepare(values: torch.Tensor, means: torch.Tensor, indexes: torch.Tensor, tables: CdfTables):
    """Fused quantize / subtract mean / table lookup on values' device (CPU or CUDA)."""
    device = values.device
    t = _tensors(tables, str(device))
    symbols, quantized = _C.prepare_symbols(
        values.float().contiguous().view(-1), means.double().to(device).contiguous().view(-1),
        indexes.int().to(device).contiguous().view(-1), t["offsets"], t["lengths"])
    return symbols.cpu().numpy(), quantized.cpu().numpy()
