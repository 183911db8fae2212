// pybind11 module triton_autogaze._stage: a host memcpy into the pinned upload stage, done by C++ threads in
// source order, so that a consumer can send (DMA) and use the first bytes while later ones are still copied.
//
// Why not Python threads (upload.py before session 10): each Python worker copied a whole group of frames, so the
// first frames were ready only when every thread's first group was (~4 ms into a 133 MB clip), and the workers
// took the GIL between groups while the main thread was launching the model. Here the threads take 1 MiB pieces
// in order (the first frame of a 1080p clip is complete after ~0.3 ms) and never touch the interpreter.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace py = pybind11;

namespace {

// The copy state one upload shares with the pool's workers (kept alive by whoever still holds it).
struct CopyJob {
  const char* src;
  char* dst;
  int64_t nbytes, piece, pieces;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<char> done;  // guarded by mu
  int64_t prefix = 0;      // pieces complete from the start; guarded by mu

  int64_t prefix_bytes() const { return std::min(prefix * piece, nbytes); }

  // Claims pieces in order and copies them until none is left (any number of threads at once).
  void work() {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= pieces) return;
      const int64_t a = i * piece;
      std::memcpy(dst + a, src + a, static_cast<size_t>(std::min(piece, nbytes - a)));
      std::lock_guard<std::mutex> lk(mu);
      done[static_cast<size_t>(i)] = 1;
      const int64_t before = prefix;
      while (prefix < pieces && done[static_cast<size_t>(prefix)]) ++prefix;
      if (prefix != before) cv.notify_all();
    }
  }
};

// Process-wide copy threads, started on first use and kept (detached, asleep on a condition variable between
// uploads): starting 8 threads for every upload cost ~0.1 ms, which a streamed 1080p frame (6 MB, ~0.3 ms of
// copying) would pay on every push.
class CopyPool {
 public:
  // Called under the GIL (OrderedCopy's constructor), so never concurrently. Never destroyed: interpreter exit
  // does not wait on the workers. A forked child has none of its parent's threads, and the parent's mutex and
  // condition variable may hold the state of waiters that do not exist there: it gets a pool of its own and
  // leaves the inherited one untouched (leaked).
  static CopyPool& get() {
    static CopyPool* pool = nullptr;
    if (pool == nullptr || pool->pid_ != getpid()) pool = new CopyPool();
    return *pool;
  }

  // Hands `job` to `threads` workers, starting workers while the pool has fewer than that. Entries are served in
  // order: a job submitted while the workers still finish another one's pieces waits for them (the copies share
  // the host's memory bandwidth either way).
  void submit(const std::shared_ptr<CopyJob>& job, int threads) {
    std::lock_guard<std::mutex> lk(mu_);
    for (int i = 0; i < threads; ++i) queue_.push_back(job);
    for (; workers_ < threads; ++workers_) std::thread([this] { worker(); }).detach();
    cv_.notify_all();
  }

 private:
  void worker() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return !queue_.empty(); });
      std::shared_ptr<CopyJob> job = std::move(queue_.front());
      queue_.pop_front();
      lk.unlock();
      job->work();
      job.reset();
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<CopyJob>> queue_;  // one entry per worker asked for; guarded by mu_
  int workers_ = 0;                              // guarded by mu_
  const pid_t pid_ = getpid();
};

class OrderedCopy {
 public:
  OrderedCopy(uintptr_t src, uintptr_t dst, int64_t nbytes, int threads, int64_t piece)
      : job_(std::make_shared<CopyJob>()) {
    if (nbytes < 0) throw py::value_error("nbytes: expected >= 0, got " + std::to_string(nbytes));
    if (piece < 1) throw py::value_error("piece: expected >= 1 bytes, got " + std::to_string(piece));
    if (threads < 1) throw py::value_error("threads: expected >= 1, got " + std::to_string(threads));
    if (nbytes > 0 && (src == 0 || dst == 0)) throw py::value_error("src / dst: null pointer");
    if (nbytes > 0 && src < dst + static_cast<uintptr_t>(nbytes) && dst < src + static_cast<uintptr_t>(nbytes))
      throw py::value_error("src and dst overlap");
    CopyJob& j = *job_;
    j.src = reinterpret_cast<const char*>(src);
    j.dst = reinterpret_cast<char*>(dst);
    j.nbytes = nbytes;
    j.piece = piece;
    j.pieces = (nbytes + piece - 1) / piece;
    j.done.assign(static_cast<size_t>(j.pieces), 0);
    if (j.pieces > 0) CopyPool::get().submit(job_, static_cast<int>(std::min<int64_t>(threads, j.pieces)));
  }

  // The buffers must outlive the copy: wait for it (the workers never take the GIL, so waiting under it is safe).
  ~OrderedCopy() { wait_all(); }

  // Bytes from the start of the source that are copied, once at least `need` are (or all of them); the GIL is
  // released while waiting.
  int64_t wait(int64_t need) {
    need = std::min(need, job_->nbytes);
    py::gil_scoped_release nogil;
    std::unique_lock<std::mutex> lk(job_->mu);
    job_->cv.wait(lk, [&] { return job_->prefix_bytes() >= need; });
    return job_->prefix_bytes();
  }

  // Bytes copied from the start so far (no waiting).
  int64_t ready() {
    std::lock_guard<std::mutex> lk(job_->mu);
    return job_->prefix_bytes();
  }

  int64_t nbytes() const { return job_->nbytes; }

  // Waits for every piece (idempotent).
  void join() {
    py::gil_scoped_release nogil;
    wait_all();
  }

 private:
  void wait_all() {
    std::unique_lock<std::mutex> lk(job_->mu);
    job_->cv.wait(lk, [&] { return job_->prefix == job_->pieces; });
  }

  std::shared_ptr<CopyJob> job_;
};

}  // namespace

PYBIND11_MODULE(_stage, m) {
  m.doc() = "Ordered multi-threaded host memcpy for the pinned upload stage (the first bytes are ready first).";
  py::class_<OrderedCopy>(m, "OrderedCopy")
      .def(py::init<uintptr_t, uintptr_t, int64_t, int, int64_t>(), py::arg("src"), py::arg("dst"),
           py::arg("nbytes"), py::arg("threads"), py::arg("piece") = 1 << 20,
           "Start copying nbytes from address src to address dst (non-overlapping) with `threads` of the process's "
           "copy threads taking `piece`-byte pieces in order. The caller keeps both buffers alive until join().")
      .def("wait", &OrderedCopy::wait, py::arg("need"),
           "Block (GIL released) until at least `need` leading bytes are copied; returns the leading bytes copied.")
      .def("ready", &OrderedCopy::ready, "Leading bytes copied so far.")
      .def_property_readonly("nbytes", &OrderedCopy::nbytes)
      .def("join", &OrderedCopy::join, "Wait for the whole copy (its threads go back to the process's pool).");
}
