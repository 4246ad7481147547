// The extension's operations, shared by cpu.cpp, cuda.cu and bindings.cpp.
// Errors: std::invalid_argument (bad arguments -> Python ValueError: a caller's bug) and CorruptStream
// (registered in bindings.cpp as aecodec._C.CorruptStreamError, a subclass of aecodec.DecodeError).
#pragma once

#include <ATen/core/Tensor.h>

#include <stdexcept>
#include <tuple>

namespace aec {

struct CorruptStream : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check_tensor(const at::Tensor& t, at::ScalarType type, c10::DeviceType device, const char* name);
const char* decode_status_message(int32_t status);

// symbols, indexes: int32 (S,); cdfs: int32 (T, width); lengths: int32 (T,). Returns the lane
// payloads (uint8) and the 16-bit word count of each lane (int64).
std::tuple<at::Tensor, at::Tensor> rans_encode(const at::Tensor& symbols, const at::Tensor& indexes,
                                               const at::Tensor& cdfs, const at::Tensor& lengths, int64_t lanes,
                                               int64_t threads);

// Inverse of rans_encode; lut: int16 (T, 4096), CdfTables.bucket_lut(). Returns int32 (S,) symbols.
at::Tensor rans_decode(const at::Tensor& payload, const at::Tensor& lane_words, const at::Tensor& indexes,
                       const at::Tensor& cdfs, const at::Tensor& lengths, const at::Tensor& lut, int64_t threads);

// values float32, means float64, indexes int32, all (S,) on one device; offsets, lengths int32 (T,).
// Returns (symbols, quantized values), int32 (S,) on that device.
std::tuple<at::Tensor, at::Tensor> prepare_symbols(const at::Tensor& values, const at::Tensor& means,
                                                   const at::Tensor& indexes, const at::Tensor& offsets,
                                                   const at::Tensor& lengths);

#ifdef AEC_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> prepare_symbols_cuda(const at::Tensor& values, const at::Tensor& means,
                                                        const at::Tensor& indexes, const at::Tensor& offsets,
                                                        const at::Tensor& lengths);
// Same contract as rans_decode with payload, indexes, cdfs, lengths, lut on one GPU (lane_words on
// the CPU); one GPU thread per lane.
at::Tensor rans_decode_cuda(const at::Tensor& payload, const at::Tensor& lane_words, const at::Tensor& indexes,
                            const at::Tensor& cdfs, const at::Tensor& lengths, const at::Tensor& lut);
#endif

}  // namespace aec
