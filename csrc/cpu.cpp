// CPU entry points: rANS lanes encoded/decoded on threads, and the fused symbol preparation.
// Only ATen's Tensor and op headers (not torch/extension.h): a 7 s compile instead of 40 s.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ops.h"
#include "rans.h"

namespace aec {

void check_tensor(const at::Tensor& t, at::ScalarType type, c10::DeviceType device, const char* name) {
  if (t.device().type() != device || t.scalar_type() != type || !t.is_contiguous())
    throw std::invalid_argument(std::string(name) + " must be a contiguous " + c10::toString(type) + " tensor on " +
                                c10::DeviceTypeName(device));
}

const char* decode_status_message(int32_t status) {
  switch (status) {
    case kBadState: return "rANS lane starts with an invalid state";
    case kOutOfData: return "rANS lane ran out of data";
    case kBadEnd: return "rANS lane did not end in its initial state: corrupt stream or mismatched model";
    case kBadIndex: return "table index out of range";
    default: return "rANS stream is corrupt";
  }
}

namespace {

void check_int32(const at::Tensor& t, const char* name) { check_tensor(t, at::kInt, c10::DeviceType::CPU, name); }

Tables make_tables(const at::Tensor& cdfs, const at::Tensor& lengths, const uint16_t* lut) {
  check_int32(cdfs, "cdfs");
  check_int32(lengths, "lengths");
  if (cdfs.dim() != 2 || lengths.dim() != 1 || lengths.size(0) != cdfs.size(0))
    throw std::invalid_argument("cdfs must be (T, width) and lengths (T,)");
  return Tables{cdfs.data_ptr<int32_t>(), lengths.data_ptr<int32_t>(), lut, static_cast<int32_t>(cdfs.size(0)),
                static_cast<int32_t>(cdfs.size(1))};
}

// Threads kept between calls: spawning and joining two threads cost ~47 us a call here, waking one
// pooled worker while the caller takes a block ~15 us (a Kodak latent's 2-thread decode is ~1.4 ms).
// Workers sleep on a condition variable between calls. One call at a time uses the pool; a concurrent
// call (the GIL is released) gets threads of its own instead.
class WorkerPool {
 public:
  // The process's pool; a forked child, whose copy has no threads, starts a new one.
  static WorkerPool& instance() {
    static std::once_flag registered;
    std::call_once(registered, [] { pthread_atfork(nullptr, nullptr, [] { current.store(nullptr); }); });
    WorkerPool* pool = current.load();
    if (pool == nullptr) {
      // Never deleted: its workers may still sleep in it at exit. A pool that lost the race has no threads yet.
      WorkerPool* fresh = new WorkerPool();
      if (current.compare_exchange_strong(pool, fresh)) return *fresh;
      delete fresh;
    }
    return *pool;
  }

  // Runs job(k) for k in [0, count): the last on the calling thread, the others on workers; waits for
  // them all. False (nothing run) if the pool was busy.
  bool try_run(int64_t count, const std::function<void(int64_t)>& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    std::unique_lock<std::mutex> lock(mutex_);
    // A new worker starts from the generation before this call's, so it takes this call's job.
    for (; workers_ < count - 1; ++workers_) std::thread([this, k = workers_, seen = generation_] { work(k, seen); }).detach();
    job_ = &job;
    active_ = pending_ = count - 1;
    ++generation_;
    wake_.notify_all();
    lock.unlock();
    std::exception_ptr error;  // the workers use `job` until they are done, so wait for them before throwing
    try {
      job(count - 1);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    done_.wait(lock, [this] { return pending_ == 0; });
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  void work(int64_t k, uint64_t seen) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (k >= active_) continue;
      lock.unlock();
      (*job_)(k);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  static inline std::atomic<WorkerPool*> current{nullptr};
  std::mutex busy_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t workers_ = 0, active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

// Splits lanes [0, lanes) into `threads` contiguous blocks of near-equal size and runs fn(begin, end)
// for each block, each on its own thread.
template <typename Fn>
void for_lane_blocks(int64_t lanes, int64_t threads, Fn fn) {
  threads = std::max<int64_t>(1, std::min(threads, lanes));
  if (threads == 1) return fn(0, lanes);
  const std::function<void(int64_t)> block = [&](int64_t k) { fn(k * lanes / threads, (k + 1) * lanes / threads); };
  if (WorkerPool::instance().try_run(threads, block)) return;
  std::vector<std::thread> spawned;
  for (int64_t k = 0; k < threads; ++k) spawned.emplace_back(block, k);
  for (auto& th : spawned) th.join();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rans_encode(const at::Tensor& symbols, const at::Tensor& indexes,
                                               const at::Tensor& cdfs, const at::Tensor& lengths, int64_t lanes,
                                               int64_t threads) {
  check_int32(symbols, "symbols");
  check_int32(indexes, "indexes");
  if (symbols.numel() != indexes.numel()) throw std::invalid_argument("symbols and indexes differ in size");
  if (lanes < 1) throw std::invalid_argument("lanes must be >= 1");
  const Tables t = make_tables(cdfs, lengths, nullptr);
  const int64_t n = symbols.numel();
  const int32_t* sym = symbols.data_ptr<int32_t>();
  const int32_t* idx = indexes.data_ptr<int32_t>();

  // Each thread encodes its lanes into their final byte layout, so the payload is one serial memcpy
  // per lane and the threads are spawned once.
  std::vector<std::vector<uint8_t>> lane_bytes(lanes);
  std::vector<int32_t> valid(lanes, 1);
  for_lane_blocks(lanes, threads, [&](int64_t first, int64_t last) {
    std::vector<uint16_t> scratch;
    for (int64_t lane = first; lane < last; ++lane) {
      int64_t begin, end;
      lane_range(n, lanes, lane, &begin, &end);
      for (int64_t i = begin; i < end; ++i)  // the core trusts its input: validate first
        if (idx[i] < 0 || idx[i] >= t.num_tables || sym[i] < 0 || sym[i] >= t.lengths[idx[i]] - 1) valid[lane] = 0;
      if (!valid[lane]) continue;
      const int64_t size = end - begin;
      scratch.resize(static_cast<size_t>(size));
      uint32_t x;
      const int64_t count = encode_lane(sym + begin, idx + begin, size, t, scratch.data(), &x);
      std::vector<uint8_t>& bytes = lane_bytes[lane];
      bytes.resize(static_cast<size_t>(4 + 2 * count));
      uint8_t* p = bytes.data();
      p[0] = x & 0xff, p[1] = (x >> 8) & 0xff, p[2] = (x >> 16) & 0xff, p[3] = x >> 24;
      const uint16_t* words = scratch.data() + size - count;
      for (int64_t i = 0; i < count; ++i) p[4 + 2 * i] = words[i] & 0xff, p[5 + 2 * i] = words[i] >> 8;
    }
  });
  if (std::find(valid.begin(), valid.end(), 0) != valid.end())
    throw std::invalid_argument("table index or symbol out of range");

  at::Tensor lane_words = at::empty({lanes}, at::kLong);
  int64_t* lw = lane_words.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t lane = 0; lane < lanes; ++lane) {
    lw[lane] = (static_cast<int64_t>(lane_bytes[lane].size()) - 4) / 2;
    total += 4 + 2 * lw[lane];
  }
  at::Tensor payload = at::empty({total}, at::kByte);
  uint8_t* out = payload.data_ptr<uint8_t>();
  for (const auto& bytes : lane_bytes) {
    std::memcpy(out, bytes.data(), bytes.size());
    out += bytes.size();
  }
  return {payload, lane_words};
}

at::Tensor rans_decode(const at::Tensor& payload, const at::Tensor& lane_words, const at::Tensor& indexes,
                       const at::Tensor& cdfs, const at::Tensor& lengths, const at::Tensor& lut, int64_t threads) {
  if (payload.scalar_type() != at::kByte || !payload.is_contiguous() || payload.dim() != 1)
    throw std::invalid_argument("payload must be a contiguous uint8 tensor");
  if (lane_words.scalar_type() != at::kLong || !lane_words.is_contiguous())
    throw std::invalid_argument("lane_words must be a contiguous int64 tensor");
  check_int32(indexes, "indexes");
  if (lut.scalar_type() != at::kShort || !lut.is_contiguous() || lut.numel() != cdfs.size(0) * (int64_t{1} << kLutBits))
    throw std::invalid_argument("lut must be a contiguous int16 (T, 4096) tensor");
  const Tables t = make_tables(cdfs, lengths, reinterpret_cast<const uint16_t*>(lut.data_ptr<int16_t>()));
  const int64_t lanes = lane_words.numel();
  if (lanes < 1) throw std::invalid_argument("a rANS stream has at least one lane");
  const int64_t* lw = lane_words.data_ptr<int64_t>();
  std::vector<int64_t> offsets(lanes);
  if (!lane_offsets(lw, lanes, payload.numel(), offsets.data()))
    throw CorruptStream("rANS payload size does not match its lane table");

  const int64_t n = indexes.numel();
  at::Tensor out = at::empty({n}, at::kInt);
  std::vector<int32_t> status(lanes, kOk);
  const uint8_t* data = payload.data_ptr<uint8_t>();
  const int32_t* idx = indexes.data_ptr<int32_t>();
  int32_t* sym = out.data_ptr<int32_t>();
  // Lanes are decoded up to kGroup at a time in lockstep: their table lookups are independent, so the
  // CPU overlaps their memory latency instead of waiting on one lane's dependency chain. Groups are
  // balanced within each thread's block (9 lanes: 5 + 4, not 8 + 1).
  constexpr int64_t kGroup = 8;
  auto decode_group = [&](int64_t first, int64_t count) {
    LaneDecoder dec[kGroup];
    // Status lives on this thread's stack while decoding: writing the shared vector every step
    // bounced its cache line between cores and made 2 threads slower than 1.
    int32_t state[kGroup];
    int64_t begin[kGroup], end[kGroup], longest = 0;
    for (int64_t k = 0; k < count; ++k) {
      lane_range(n, lanes, first + k, &begin[k], &end[k]);
      state[k] = lane_start(&dec[k], data + offsets[first + k], lw[first + k]);
      longest = std::max(longest, end[k] - begin[k]);
    }
    for (int64_t i = 0; i < longest; ++i) {
      for (int64_t k = 0; k < count; ++k) {
        const int64_t pos = begin[k] + i;
        if (pos < end[k] && state[k] == kOk) state[k] = decode_step(&dec[k], idx[pos], t, sym + pos);
      }
    }
    for (int64_t k = 0; k < count; ++k) status[first + k] = state[k] == kOk ? lane_finish(dec[k]) : state[k];
  };
  for_lane_blocks(lanes, threads, [&](int64_t first, int64_t last) {
    const int64_t groups = (last - first + kGroup - 1) / kGroup;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t a = first + g * (last - first) / groups, b = first + (g + 1) * (last - first) / groups;
      decode_group(a, b - a);
    }
  });
  for (int32_t s : status) {
    if (s == kBadIndex) throw std::invalid_argument(decode_status_message(s));
    if (s != kOk) throw CorruptStream(decode_status_message(s));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> prepare_symbols(const at::Tensor& values, const at::Tensor& means,
                                                   const at::Tensor& indexes, const at::Tensor& offsets,
                                                   const at::Tensor& lengths) {
  const c10::DeviceType device = values.device().type();
  check_tensor(values, at::kFloat, device, "values");
  check_tensor(means, at::kDouble, device, "means");
  check_tensor(indexes, at::kInt, device, "indexes");
  check_tensor(offsets, at::kInt, device, "offsets");
  check_tensor(lengths, at::kInt, device, "lengths");
  const int64_t n = values.numel();
  if (means.numel() != n || indexes.numel() != n || offsets.numel() != lengths.numel())
    throw std::invalid_argument("values, means and indexes differ in size");
  if (device != c10::DeviceType::CPU) {
#ifdef AEC_WITH_CUDA
    return prepare_symbols_cuda(values, means, indexes, offsets, lengths);
#else
    throw std::invalid_argument("aecodec's extension was built without CUDA");
#endif
  }
  const float* v = values.data_ptr<float>();
  const double* m = means.data_ptr<double>();
  const int32_t* idx = indexes.data_ptr<int32_t>();
  const int32_t tables = static_cast<int32_t>(lengths.numel());
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= tables) throw std::invalid_argument("table index out of range");
  at::Tensor symbols = at::empty({n}, at::kInt);
  at::Tensor quantized = at::empty({n}, at::kInt);
  int32_t* s = symbols.data_ptr<int32_t>();
  int32_t* q = quantized.data_ptr<int32_t>();
  const int32_t* off = offsets.data_ptr<int32_t>();
  const int32_t* len = lengths.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i) prepare_symbol(v[i], m[i], idx[i], off, len, s + i, q + i);
  return {symbols, quantized};
}

}  // namespace aec
