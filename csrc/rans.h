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
// The decoder finds a slot's symbol from a coarse table of 2^kLutBits buckets per CDF, then steps
// forward; 4096 buckets take 8 KB per table where a full slot table takes 128 KB.
constexpr uint32_t kLutBits = 12;

// T quantized CDFs, row t valid on [0, lengths[t]): cdfs[t][0] = 0, cdfs[t][lengths[t]-1] = 2^16,
// strictly increasing. REQUIRES (checked by the caller once): these invariants.
struct Tables {
  const int32_t* cdfs;     // (num_tables, width), row-major
  const int32_t* lengths;  // (num_tables,)
  const uint16_t* lut;     // (num_tables, 2^kLutBits): the symbol owning the first slot of each bucket
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
// Returns the number of words emitted, `count`, and leaves them in scratch[n - count, n) (capacity n)
// in stored order, i.e. the reverse of emission order; *state gets the final state. The stored
// lane is: state (u32 LE), then those words (u16 LE).
inline int64_t encode_lane(const int32_t* symbols, const int32_t* indexes, int64_t n, const Tables& t,
                           uint16_t* scratch, uint32_t* state_out) {
  uint64_t x = kRansL;
  int64_t emitted = 0;
  for (int64_t i = n - 1; i >= 0; --i) {
    const int32_t* cdf = t.cdfs + static_cast<int64_t>(indexes[i]) * t.width;
    const uint64_t start = static_cast<uint32_t>(cdf[symbols[i]]);
    const uint64_t freq = static_cast<uint32_t>(cdf[symbols[i] + 1]) - start;
    if (x >= (freq << kPrecision)) {
      scratch[n - 1 - emitted++] = static_cast<uint16_t>(x & kSlotMask);
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

// Byte offset of each stored lane (4-byte state + 2 bytes per word) in a payload of payload_bytes.
// False unless every lane fits and together they fill the payload exactly: each word count is bounded
// before it is added, so a hostile lane table (counts near 2^62) cannot overflow the sum and wrap
// around to the payload's size.
inline bool lane_offsets(const int64_t* words, int64_t lanes, int64_t payload_bytes, int64_t* offsets) {
  int64_t used = 0;
  for (int64_t lane = 0; lane < lanes; ++lane) {
    if (words[lane] < 0 || payload_bytes - used < 4 || words[lane] > (payload_bytes - used - 4) / 2) return false;
    offsets[lane] = used;
    used += 4 + 2 * words[lane];
  }
  return used == payload_bytes;
}

// Decoder of one stored lane (data: 4 + 2 * words bytes). Never reads outside that range.
struct LaneDecoder {
  uint64_t x;
  const uint8_t* words;
  int64_t num_words;
  int64_t read;
};

AEC_HD inline int32_t lane_start(LaneDecoder* d, const uint8_t* data, int64_t words) {
  d->x = load_u32_le(data);
  d->words = data + 4;
  d->num_words = words;
  d->read = 0;
  return d->x < kRansL ? kBadState : kOk;
}

// Decodes one symbol with table `index` (checked against the number of tables).
AEC_HD inline int32_t decode_step(LaneDecoder* d, int32_t index, const Tables& t, int32_t* symbol_out) {
  if (index < 0 || index >= t.num_tables) return kBadIndex;
  const uint32_t slot = static_cast<uint32_t>(d->x & kSlotMask);
  int32_t symbol = t.lut[(static_cast<int64_t>(index) << kLutBits) + (slot >> (kPrecision - kLutBits))];
  const int32_t* cdf = t.cdfs + static_cast<int64_t>(index) * t.width;
  // Terminates within the row: cdf[length - 1] = 2^16 > slot.
  while (static_cast<uint32_t>(cdf[symbol + 1]) <= slot) ++symbol;
  const uint64_t start = static_cast<uint32_t>(cdf[symbol]);
  const uint64_t freq = static_cast<uint32_t>(cdf[symbol + 1]) - start;
  d->x = freq * (d->x >> kPrecision) + slot - start;
  if (d->x < kRansL) {
    if (d->read >= d->num_words) return kOutOfData;
    d->x = (d->x << kPrecision) | load_u16_le(d->words + 2 * d->read);
    ++d->read;
  }
  *symbol_out = symbol;
  return kOk;
}

// A lane is valid only if it ends in the encoder's initial state having read every word.
AEC_HD inline int32_t lane_finish(const LaneDecoder& d) {
  return (d.x == kRansL && d.read == d.num_words) ? kOk : kBadEnd;
}

// Decodes the n symbols of one lane; never writes outside out[0, n).
AEC_HD inline int32_t decode_lane(const uint8_t* data, int64_t words, const int32_t* indexes, int64_t n,
                                  const Tables& t, int32_t* out) {
  LaneDecoder d;
  int32_t status = lane_start(&d, data, words);
  for (int64_t i = 0; i < n && status == kOk; ++i) status = decode_step(&d, indexes[i], t, out + i);
  return status == kOk ? lane_finish(d) : status;
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
