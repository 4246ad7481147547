// CUDA kernels: the fused symbol preparation (one thread per element) and rANS lane decoding (one
// thread per lane). Both call the same rans.h functions as the CPU code, so results are bit-identical.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <vector>

#include "ops.h"
#include "rans.h"

namespace aec {
namespace {

constexpr int kThreads = 256;

__global__ void prepare_kernel(const float* values, const double* means, const int32_t* indexes, int64_t n,
                               const int32_t* offsets, const int32_t* lengths, int32_t tables, int32_t* symbols,
                               int32_t* quantized, int32_t* bad_index) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int32_t index = indexes[i];
  if (index < 0 || index >= tables) {
    *bad_index = 1;
    symbols[i] = quantized[i] = 0;
    return;
  }
  prepare_symbol(values[i], means[i], index, offsets, lengths, symbols + i, quantized + i);
}

__global__ void decode_kernel(const uint8_t* payload, const int64_t* lane_offsets, const int64_t* lane_words,
                              int64_t lanes, const int32_t* indexes, int64_t n, Tables tables, int32_t* out,
                              int32_t* status) {
  const int64_t lane = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (lane >= lanes) return;
  int64_t begin, end;
  lane_range(n, lanes, lane, &begin, &end);
  status[lane] = decode_lane(payload + lane_offsets[lane], lane_words[lane], indexes + begin, end - begin, tables,
                             out + begin);
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> prepare_symbols_cuda(const at::Tensor& values, const at::Tensor& means,
                                                        const at::Tensor& indexes, const at::Tensor& offsets,
                                                        const at::Tensor& lengths) {
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t n = values.numel();
  at::Tensor symbols = at::empty({n}, indexes.options());
  at::Tensor quantized = at::empty({n}, indexes.options());
  at::Tensor bad_index = at::zeros({1}, indexes.options());
  if (n > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    prepare_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        values.data_ptr<float>(), means.data_ptr<double>(), indexes.data_ptr<int32_t>(), n,
        offsets.data_ptr<int32_t>(), lengths.data_ptr<int32_t>(), static_cast<int32_t>(lengths.numel()),
        symbols.data_ptr<int32_t>(), quantized.data_ptr<int32_t>(), bad_index.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (bad_index.cpu().data_ptr<int32_t>()[0]) throw std::invalid_argument("table index out of range");
  return {symbols, quantized};
}

at::Tensor rans_decode_cuda(const at::Tensor& payload, const at::Tensor& lane_words, const at::Tensor& indexes,
                            const at::Tensor& cdfs, const at::Tensor& lengths, const at::Tensor& lut) {
  const c10::DeviceType cuda = c10::DeviceType::CUDA;
  check_tensor(payload, at::kByte, cuda, "payload");
  check_tensor(lane_words, at::kLong, c10::DeviceType::CPU, "lane_words");
  check_tensor(indexes, at::kInt, cuda, "indexes");
  check_tensor(cdfs, at::kInt, cuda, "cdfs");
  check_tensor(lengths, at::kInt, cuda, "lengths");
  check_tensor(lut, at::kShort, cuda, "lut");
  if (cdfs.dim() != 2 || lengths.numel() != cdfs.size(0) || lut.numel() != cdfs.size(0) * (int64_t{1} << kLutBits))
    throw std::invalid_argument("cdfs, lengths and lut disagree in shape");
  const c10::cuda::CUDAGuard guard(payload.device());

  // Lane offsets are validated on the host, so no kernel can read past the payload.
  const int64_t lanes = lane_words.numel();
  if (lanes < 1) throw std::invalid_argument("a rANS stream has at least one lane");
  const int64_t* lw = lane_words.data_ptr<int64_t>();
  at::Tensor offsets = at::empty({lanes}, lane_words.options());
  int64_t* off = offsets.data_ptr<int64_t>();
  if (!lane_offsets(lw, lanes, payload.numel(), off))
    throw CorruptStream("rANS payload size does not match its lane table");

  const int64_t n = indexes.numel();
  at::Tensor out = at::empty({n}, indexes.options());
  at::Tensor status = at::zeros({lanes}, indexes.options());
  if (lanes > 0) {
    const Tables tables{cdfs.data_ptr<int32_t>(), lengths.data_ptr<int32_t>(),
                        reinterpret_cast<const uint16_t*>(lut.data_ptr<int16_t>()), static_cast<int32_t>(cdfs.size(0)),
                        static_cast<int32_t>(cdfs.size(1))};
    at::Tensor offsets_gpu = offsets.to(payload.device());
    at::Tensor words_gpu = lane_words.to(payload.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    decode_kernel<<<blocks_for(lanes), kThreads, 0, stream>>>(
        payload.data_ptr<uint8_t>(), offsets_gpu.data_ptr<int64_t>(), words_gpu.data_ptr<int64_t>(), lanes,
        indexes.data_ptr<int32_t>(), n, tables, out.data_ptr<int32_t>(), status.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor status_cpu = status.cpu();
  for (int64_t lane = 0; lane < lanes; ++lane) {
    const int32_t s = status_cpu.data_ptr<int32_t>()[lane];
    if (s == kBadIndex) throw std::invalid_argument(decode_status_message(s));
    if (s != kOk) throw CorruptStream(decode_status_message(s));
  }
  return out;
}

}  // namespace aec
