"""Latents <-> entropy-coded streams: the part of the codec that must be exact.

z is coded with the entropy bottleneck's per-channel tables. y is coded with the Gaussian conditional's
tables, the table index and mean of each element coming from the hyper-synthesis h_s(z_hat). Those two
must be identical in encoder and decoder, on any device, thread count or build, or decoding derails:
so h_s runs here as an integer network (Balle et al. 2019, "Integer networks for data compression"):
weights rounded to 12-bit fixed point, activations to 1/256 steps, every value an integer held in
float64. Every product and partial sum is an integer below 2**53, so float64 arithmetic on them is
exact whatever the summation order or algorithm (GEMM, blocked, threaded): the result is the same
everywhere. It runs on the CPU: z is 1/64 of the image per side, so this costs little.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import coder
from .coder.tables import MAX_QUANTIZED, CdfTables
from .errors import DecodeError
from .format import ByteReader, varint
from .network import STRIDE, Y_STRIDE, one_thread, tiled

WEIGHT_BITS = 11  # |integer weight| < 2**WEIGHT_BITS per layer (power-of-two scale per layer)
ACT_FRACTION = 8  # activations and means in units of 1/256
ACT_LIMIT = float(1 << 20)  # activations are clamped to +-2**20 units: bounds every sum below 2**53
LEAKY_FRACTION = 12  # LeakyReLU slope as k / 4096
# h_s runs on tiles of HYPER_TILE z pixels (2048 image pixels): the float64 im2col of one takes ~0.5 GB.
# Smaller tiles cost time in recomputed context: 16 z pixels took 1.7x as long on a 4K image.
HYPER_TILE = 32
HYPER_TILE_MARGIN = 3  # z pixels of context per h_s tile: its reach is under 2


class IntegerHyperSynthesis:
    """h_s in exact integer arithmetic: z_hat -> (table indexes, means in 1/256 units), both int64."""

    def __init__(self, h_s: nn.Sequential, scale_table: torch.Tensor):
        self.layers = []
        for module in h_s:
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                weight = module.weight.detach().double().cpu()
                shift = WEIGHT_BITS - math.ceil(math.log2(weight.abs().max().item() + 1e-30))
                w_int = torch.round(weight * 2.0**shift)
                in_dim = 0 if isinstance(module, nn.ConvTranspose2d) else 1  # (in, out, k, k) vs (out, in, k, k)
                fan_in = w_int.abs().sum(dim=(in_dim, 2, 3)).max().item()
                if fan_in * ACT_LIMIT * 2 >= 2**53:
                    raise ValueError("hyper-synthesis layer too wide for exact float64 integer arithmetic")
                bias = torch.round(module.bias.detach().double().cpu() * 2.0 ** (shift + ACT_FRACTION))
                self.layers.append(("conv", module, w_int, bias, shift))
            elif isinstance(module, nn.LeakyReLU):
                self.layers.append(("leaky", round(module.negative_slope * (1 << LEAKY_FRACTION))))
            elif isinstance(module, nn.ReLU):
                self.layers.append(("leaky", 0))
            else:
                raise TypeError(f"no integer version of {type(module).__name__}")
        self.final_shift = self.layers[-1][4]
        # compressai's index is #{i < T-1: table[i] < scale} (scales below table[0] take index 0); for an
        # integer accumulator, table[i] < scale exactly when floor(table[i] * unit) < accumulator.
        scale_unit = 2.0 ** (self.final_shift + ACT_FRACTION)
        self.thresholds = torch.floor(scale_table.double().cpu()[:-1] * scale_unit).contiguous()

    def _accumulate(self, act: torch.Tensor) -> torch.Tensor:
        """Integer z_hat (1/256 units) -> final integer accumulator (scales and means channels)."""
        acc = act
        for i, layer in enumerate(self.layers):
            if layer[0] == "conv":
                _, module, w_int, bias, shift = layer
                if i:  # requantize the previous accumulator to 1/256 units, rounding (floor would bias it)
                    act = torch.floor(acc * 2.0 ** -prev_shift + 0.5).clamp_(-ACT_LIMIT, ACT_LIMIT)
                if isinstance(module, nn.ConvTranspose2d):
                    acc = F.conv_transpose2d(act, w_int, bias, module.stride, module.padding, module.output_padding)
                else:
                    acc = F.conv2d(act, w_int, bias, module.stride, module.padding)
                # Exact already; rounding also absorbs any error below 0.5 from a convolution algorithm
                # that is not exact (FFT, Winograd), so even such a device derives the same integers.
                acc = torch.round(acc)
                prev_shift = shift
            else:
                slope = layer[1]
                acc = torch.where(acc >= 0, acc, torch.floor(acc * slope * 2.0**-LEAKY_FRACTION))
        return acc

    def __call__(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = torch.round(z_hat.detach().double().cpu() * 2.0**ACT_FRACTION).clamp_(-ACT_LIMIT, ACT_LIMIT)
        # Tiles bound the memory of float64 convolutions on big images (im2col of a 24 MP image: > 1 GB);
        # integer sums are exact in any order, so tiling with margin > h_s's reach changes no value.
        acc = tiled(self._accumulate, act, HYPER_TILE, HYPER_TILE_MARGIN, up=STRIDE // Y_STRIDE)
        scales, means = acc.chunk(2, 1)
        indexes = torch.searchsorted(self.thresholds, scales.contiguous(), right=False)
        means = torch.floor(means * 2.0**-self.final_shift)
        return indexes, means.long()


class LatentCoder:
    """Codes a model's latents (batch of one) into the streams z, y and escapes, and back."""

    def __init__(self, model):
        """model: an aecodec.network.Network (its entropy models' frozen tables, h_s)."""
        eb, gc = model.entropy_bottleneck, model.gaussian_conditional
        self.z_tables = CdfTables(eb._quantized_cdf.cpu(), eb._cdf_length.cpu(), eb._offset.cpu())
        self.y_tables = CdfTables(gc._quantized_cdf.cpu(), gc._cdf_length.cpu(), gc._offset.cpu())
        self.z_medians = model.z_medians().cpu()
        with one_thread():
            self.hyper = IntegerHyperSynthesis(model.h_s, gc.scale_table)
        self.y_channels = model.M

    def _z_indexes(self, shape) -> np.ndarray:
        c, h, w = shape
        return np.repeat(np.arange(c, dtype=np.int32), h * w)

    def encode(self, y: torch.Tensor, z: torch.Tensor, backend: str | None = None) -> tuple[dict, int]:
        """y (1, M, h, w), z (1, N, h/4, w/4) floats -> (streams, CRC of what the decoder must reproduce)."""
        z_idx = self._z_indexes(z.shape[1:])
        z_sym, z_values = coder.prepare(z, self.z_medians.expand_as(z.cpu()), torch.from_numpy(z_idx), self.z_tables, backend)
        z_hat = torch.from_numpy(z_values).float().reshape(z.shape) + self.z_medians
        y_indexes, y_means = self.hyper(z_hat)
        y_idx = y_indexes.numpy().astype(np.int32).ravel()
        y_sym, y_values = coder.prepare(y, y_means.double() * 2.0**-ACT_FRACTION, y_indexes, self.y_tables, backend)
        escapes = np.concatenate([z_values[z_sym == self.z_tables.escape_symbols[z_idx]],
                                  y_values[y_sym == self.y_tables.escape_symbols[y_idx]]])
        streams = {
            "z": coder.encode_stream(z_sym, z_idx, self.z_tables, backend=backend),
            "y": coder.encode_stream(y_sym, y_idx, self.y_tables, backend=backend),
            "escapes": b"".join(varint(zigzag(int(v))) for v in escapes),
        }
        return streams, symbols_crc(z_values, y_values, y_idx, y_means.numpy())

    def decode(self, streams: dict, z_shape, expected_crc: int, backend: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Streams -> (y_hat (1, M, 4h, 4w) float32, y's quantized values (M, 4h, 4w), integers in float64);
        raises DecodeError if anything disagrees."""
        self.check_stream_sizes(streams, z_shape)
        escapes = EscapeReader(streams["escapes"])
        z_idx = self._z_indexes(z_shape)
        z_sym = coder.decode_stream(streams["z"], z_idx, self.z_tables, backend=backend)
        z_values = from_symbols(z_sym, z_idx, self.z_tables, escapes).reshape(1, *z_shape)
        z_hat = torch.from_numpy(z_values).float() + self.z_medians
        y_indexes, y_means = self.hyper(z_hat)
        y_idx = y_indexes.numpy().astype(np.int32).ravel()
        y_sym = coder.decode_stream(streams["y"], y_idx, self.y_tables, backend=backend)
        y_values = from_symbols(y_sym, y_idx, self.y_tables, escapes).reshape(y_means.shape)
        escapes.finish()
        if symbols_crc(z_values, y_values, y_idx, y_means.numpy()) != expected_crc:
            raise DecodeError("decoded latents fail their checksum: corrupt file or a model mismatch")
        y_hat = torch.from_numpy(y_values) + y_means.double() * 2.0**-ACT_FRACTION
        return y_hat.float(), y_values[0]


    def check_stream_sizes(self, streams: dict, z_shape) -> None:
        """Refuse streams too short for the declared image before decoding allocates or works for it.

        No symbol codes in fewer bits than its table's most probable one (CdfTables.min_bits), and a rANS
        stream is never shorter than its symbols' code lengths (measured >= 1.00x with 10 to 10**6 of the
        cheapest symbols); asking for half of that bound leaves a wide margin."""
        channels, h, w = z_shape
        y_size = (h * STRIDE // Y_STRIDE) * (w * STRIDE // Y_STRIDE)
        least_bits = {
            "z": h * w * float(self.z_tables.min_bits()[:channels].sum()),
            "y": self.y_channels * y_size * float(self.y_tables.min_bits().min()),
        }
        for name, bits in least_bits.items():
            if 8 * len(streams[name]) < bits / 2:
                raise DecodeError(f"{name} stream is too short for the image size in the header "
                                  f"({len(streams[name])} bytes, at least {bits / 16:.0f} needed)")


def zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def from_symbols(symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables, escapes: "EscapeReader") -> np.ndarray:
    values = symbols.astype(np.int64) + tables.offsets[indexes]
    outside = symbols == tables.escape_symbols[indexes]
    if outside.any():
        values[outside] = escapes.take(int(outside.sum()))
    return values.astype(np.float64)


class EscapeReader:
    def __init__(self, data: bytes):
        self.reader = ByteReader(data, "escape stream")

    def take(self, n: int) -> list[int]:
        if n > len(self.reader.data) - self.reader.pos:  # each escape takes at least one byte
            raise DecodeError(f"escape stream is too short for its {n} escaped values")
        raw = [self.reader.varint() for _ in range(n)]
        values = [v // 2 if v % 2 == 0 else -(v + 1) // 2 for v in raw]
        if any(abs(v) > MAX_QUANTIZED for v in values):  # the encoder clamps there: this file is damaged
            raise DecodeError("escape stream holds a value out of range")
        return values

    def finish(self) -> None:
        if self.reader.pos != len(self.reader.data):
            raise DecodeError("escape stream has unused bytes")


def symbols_crc(z_values, y_values, y_indexes, y_means) -> int:
    """CRC32 of everything the decoder derives: quantized z and y, y's table indexes and integer means."""
    crc = 0
    for array in (z_values, y_values, y_indexes, y_means):
        crc = zlib.crc32(np.ascontiguousarray(array, dtype="<i4").tobytes(), crc)
    return crc
