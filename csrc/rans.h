// rANS lanes: the core of aecodec's entropy coder (spec: docs/FORMAT.md, "rANS lanes").
//
// No torch and no pybind11 here: plain C++ (and CUDA-callable where marked AEC_HD) shared by the
// CPU and CUDA code, and bit-exact with the NumPy reference in aecodec/coder/python.py.
//
// State x lives in [kRansL, 2^32). A symbol with CDF interval [start, start + freq) of 2^16 is
// encoded as x' = (x / freq) * 2^16 + x % freq + start, after emitting the low 16 bits of x while
// x >= freq * 2^16; decoding inverts it and reads one 16-bit word whenever x drops below kRansL.
// Encoding runs backwards over a lane, so the decoder reads words in the order they are stored.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define AEC_HD __host__ __device__
#else
#define AEC_HD
#endif

namespace aec {

constexpr uint32_t kPrecision = 16;
constexpr uint32_t kRansL = 1u << 16;
constexpr uint32_t kSlotMask = (1u << kPrecision) - 1;

// T quantized CDFs, row t valid on [0, lengths[t]): cdfs[t][0] = 0, cdfs[t][lengths[t]-1] = 2^16,
// strictly increasing. REQUIRES (checked by the caller once): these invariants.
struct Tables {
  const int32_t* cdfs;     // (num_tables, width), row-major
  const int32_t* lengths;  // (num_tables,)
  const uint16_t* lut;     // (num_tables, 2^16): the symbol owning each slot; decode only
  int32_t num_tables;
  int32_t width;
};

// Status codes of decode_lane; 0 is success.
enum DecodeStatus : int32_t { kOk = 0, kBadState = 1, kOutOfData = 2, kBadEnd = 3, kBadIndex = 4 };

// Lane k of S symbols in L lanes covers [k*n, min((k+1)*n, S)) with n = ceil(S / L).
AEC_HD inline void lane_range(int64_t num_symbols, int64_t lanes, int64_t lane, int64_t* begin, int64_t* end) {
  const int64_t n = lanes ? (num_symbols + lanes - 1) / lanes : 0;
  int64_t b = lane * n;
  if (b > num_symbols) b = num_symbols;
  int64_t e = b + n;
  if (e > num_symbols) e = num_symbols;
  *begin = b;
  *end = e;
}

// Encodes symbols[0, n) with tables indexes[0, n). REQUIRES: each symbol < lengths[index] - 1.
// Writes words in *emission* order into scratch (capacity n) and returns their count; *state gets
// the final state. The stored lane is: state (u32 LE), then the words in reverse emission order.
inline int64_t encode_lane(const int32_t* symbols, const int32_t* indexes, int64_t n, const Tables& t,
                           uint16_t* scratch, uint32_t* state_out) {
  uint64_t x = kRansL;
  int64_t emitted = 0;
  for (int64_t i = n - 1; i >= 0; --i) {
    const int32_t* cdf = t.cdfs + static_cast<int64_t>(indexes[i]) * t.width;
    const uint64_t start = static_cast<uint32_t>(cdf[symbols[i]]);
    const uint64_t freq = static_cast<uint32_t>(cdf[symbols[i] + 1]) - start;
    if (x >= (freq << kPrecision)) {
      scratch[emitted++] = static_cast<uint16_t>(x & kSlotMask);
      x >>= kPrecision;
    }
    x = ((x / freq) << kPrecision) + x % freq + start;
  }
  *state_out = static_cast<uint32_t>(x);
  return emitted;
}

AEC_HD inline uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

AEC_HD inline uint32_t load_u16_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8;
}

// Decodes n symbols of one stored lane (data: 4 + 2 * words bytes). Never reads outside
// data[0, 4 + 2 * words) nor writes outside out[0, n); indexes must be < num_tables (checked).
AEC_HD inline int32_t decode_lane(const uint8_t* data, int64_t words, const int32_t* indexes, int64_t n,
                                  const Tables& t, int32_t* out) {
  uint64_t x = load_u32_le(data);
  if (x < kRansL) return kBadState;
  const uint8_t* word = data + 4;
  int64_t read = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t index = indexes[i];
    if (index < 0 || index >= t.num_tables) return kBadIndex;
    const uint32_t slot = static_cast<uint32_t>(x & kSlotMask);
    const int32_t symbol = t.lut[(static_cast<int64_t>(index) << kPrecision) + slot];
    const int32_t* cdf = t.cdfs + static_cast<int64_t>(index) * t.width;
    const uint64_t start = static_cast<uint32_t>(cdf[symbol]);
    const uint64_t freq = static_cast<uint32_t>(cdf[symbol + 1]) - start;
    x = freq * (x >> kPrecision) + slot - start;
    if (x < kRansL) {
      if (read >= words) return kOutOfData;
      x = (x << kPrecision) | load_u16_le(word + 2 * read);
      ++read;
    }
    out[i] = symbol;
  }
  return (x == kRansL && read == words) ? kOk : kBadEnd;
}

// Quantized values are clamped to +-kMaxQuantized so they always fit int32 (real latents stay far inside).
constexpr double kMaxQuantized = 1073741824.0;  // 2^30

// The fused per-symbol preparation: q = clamp(round_half_even(value - mean)) in double precision,
// symbol = q - offsets[index], or the table's escape symbol lengths[index] - 2 when q is outside the
// table (escaped values are coded raw from q). REQUIRES: 0 <= index < number of tables.
AEC_HD inline void prepare_symbol(double value, double mean, int32_t index, const int32_t* offsets,
                                  const int32_t* lengths, int32_t* symbol, int32_t* quantized) {
  double q = rint(value - mean);  // rint rounds half to even in the default rounding mode, host and device
  q = q < -kMaxQuantized ? -kMaxQuantized : (q > kMaxQuantized ? kMaxQuantized : q);
  const int32_t escape = lengths[index] - 2;
  const double s = q - static_cast<double>(offsets[index]);
  *symbol = (s >= 0.0 && s < static_cast<double>(escape)) ? static_cast<int32_t>(s) : escape;
  *quantized = static_cast<int32_t>(q);
}

}  // namespace aec
