// A tiny persistent thread pool for the CPU decoder: the caller plus (threads - 1) workers claim work items from
// one atomic word. A decode step has ~20 short parallel phases, so workers spin between phases (a condition
// variable would cost tens of microseconds per wake-up) and sleep only after ~0.5 ms without a forward pass.
#pragma once

#include <immintrin.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace cpudec {

class SpinPool {
 public:
  // Process-wide pool, never destroyed (workers are detached, so interpreter exit does not wait on them).
  static SpinPool& get() {
    static SpinPool* pool = new SpinPool();
    return *pool;
  }

  // Makes sure (threads - 1) workers exist for this process (a forked child starts over without the parent's).
  void ensure(int threads) {
    // more spinning threads than cores would take turns on a core instead of running together
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    if (cores > 0 && threads > cores) threads = cores;
    if (threads < 1) threads = 1;
    if (pid_ == getpid() && threads == threads_) return;
    if (pid_ == getpid()) stop_workers();
    pid_ = getpid();
    threads_ = threads;
    const uint64_t gen = gen_.load();
    for (int i = 1; i < threads; ++i) std::thread([this, gen] { worker(gen); }).detach();
  }

  int threads() const { return threads_ < 1 ? 1 : threads_; }

  // Marks a forward pass as running: sleeping workers wake up (they join the current phase when they do).
  void begin() {
    active_.store(true);  // seq_cst on both sides: a worker going to sleep either sees this or is seen
    if (sleeping_.load() > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_all();
    }
  }
  void end() {
    last_end_ns_.store(now_ns(), std::memory_order_relaxed);
    active_.store(false, std::memory_order_release);
  }

  // Runs fn(i) for i in [0, n) on the caller and the workers; returns when every item is done. Items run in any
  // order on any thread, each exactly once; the caller alone runs them all if no worker turns up.
  template <class F>
  void run(int64_t n, F&& fn) {
    if (n <= 0) return;
    if (threads_ <= 1 || n == 1) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    fn_ = [](void* ctx, int64_t i) { (*static_cast<F*>(ctx))(i); };
    ctx_ = &fn;
    done_.store(0, std::memory_order_relaxed);
    epoch_ = (epoch_ + 1) & 0xffff;
    state_.store(pack(epoch_, n, 0), std::memory_order_release);
    claim_all();
    while (done_.load(std::memory_order_acquire) < n) _mm_pause();
  }

 private:
  // state_ = epoch (16 bits) | item count (24 bits) | next unclaimed item (24 bits)
  static constexpr uint64_t kMask = (1ull << 24) - 1;
  static uint64_t pack(uint64_t epoch, uint64_t n, uint64_t next) { return (epoch << 48) | (n << 24) | next; }
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  // Claims and runs items until none is left; true if it ran any.
  bool claim_all() {
    bool ran = false;
    uint64_t s = state_.load(std::memory_order_acquire);
    while ((s & kMask) < ((s >> 24) & kMask)) {
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        fn_(ctx_, static_cast<int64_t>(s & kMask));
        done_.fetch_add(1, std::memory_order_acq_rel);
        ran = true;
        s = state_.load(std::memory_order_acquire);
      }
    }
    return ran;
  }

  void worker(uint64_t gen) {
    int64_t idle_since = now_ns();
    uint32_t polls = 0;
    while (gen == gen_.load(std::memory_order_acquire)) {
      if (claim_all()) {
        idle_since = now_ns();
        continue;
      }
      _mm_pause();
      if ((++polls & 255) != 0 || active_.load(std::memory_order_acquire)) continue;
      const int64_t t = now_ns();
      if (t - idle_since < kSpinNs || t - last_end_ns_.load(std::memory_order_relaxed) < kSpinNs) continue;
      std::unique_lock<std::mutex> lk(mu_);
      sleeping_.fetch_add(1);
      cv_.wait_for(lk, std::chrono::milliseconds(100),
                   [this, gen] { return active_.load() || gen != gen_.load(std::memory_order_acquire); });
      sleeping_.fetch_sub(1);
      idle_since = now_ns();
    }
  }

  void stop_workers() {
    // Old workers see the generation change and exit on their own (they are detached, nothing to join).
    std::lock_guard<std::mutex> lk(mu_);
    gen_.fetch_add(1);
    cv_.notify_all();
  }

  static constexpr int64_t kSpinNs = 2000000;
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> done_{0};
  void (*fn_)(void*, int64_t) = nullptr;
  void* ctx_ = nullptr;
  uint64_t epoch_ = 0;
  int threads_ = 0;
  pid_t pid_ = 0;
  std::atomic<uint64_t> gen_{0};  // bumped to retire the current workers
  std::atomic<bool> active_{false};
  std::atomic<int> sleeping_{0};
  std::atomic<int64_t> last_end_ns_{0};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace cpudec
