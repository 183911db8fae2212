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
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace {

class OrderedCopy {
 public:
  OrderedCopy(uintptr_t src, uintptr_t dst, int64_t nbytes, int threads, int64_t piece)
      : src_(reinterpret_cast<const char*>(src)), dst_(reinterpret_cast<char*>(dst)), nbytes_(nbytes),
        piece_(piece) {
    if (nbytes < 0) throw py::value_error("nbytes: expected >= 0, got " + std::to_string(nbytes));
    if (piece < 1) throw py::value_error("piece: expected >= 1 bytes, got " + std::to_string(piece));
    if (threads < 1) throw py::value_error("threads: expected >= 1, got " + std::to_string(threads));
    if (nbytes > 0 && (src == 0 || dst == 0)) throw py::value_error("src / dst: null pointer");
    if (nbytes > 0 && src < dst + static_cast<uintptr_t>(nbytes) && dst < src + static_cast<uintptr_t>(nbytes))
      throw py::value_error("src and dst overlap");
    pieces_ = (nbytes + piece - 1) / piece;
    done_.assign(static_cast<size_t>(pieces_), 0);
    const int n = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(pieces_, 1)));
    workers_.reserve(n);
    for (int i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
  }

  ~OrderedCopy() { join_threads(); }  // the workers never take the GIL, so joining under it is safe

  // Bytes from the start of the source that are copied, once at least `need` are (or all of them); the GIL is
  // released while waiting.
  int64_t wait(int64_t need) {
    need = std::min(need, nbytes_);
    py::gil_scoped_release nogil;
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return prefix_bytes() >= need; });
    return prefix_bytes();
  }

  // Bytes copied from the start so far (no waiting).
  int64_t ready() {
    std::lock_guard<std::mutex> lk(mu_);
    return prefix_bytes();
  }

  int64_t nbytes() const { return nbytes_; }

  // Waits for every piece and ends the threads (idempotent).
  void join() {
    py::gil_scoped_release nogil;
    join_threads();
  }

 private:
  void join_threads() {
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }

  int64_t prefix_bytes() const { return std::min(prefix_ * piece_, nbytes_); }

  void work() {
    for (;;) {
      const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= pieces_) return;
      const int64_t a = i * piece_;
      std::memcpy(dst_ + a, src_ + a, static_cast<size_t>(std::min(piece_, nbytes_ - a)));
      std::lock_guard<std::mutex> lk(mu_);
      done_[static_cast<size_t>(i)] = 1;
      const int64_t before = prefix_;
      while (prefix_ < pieces_ && done_[static_cast<size_t>(prefix_)]) ++prefix_;
      if (prefix_ != before) cv_.notify_all();
    }
  }

  const char* src_;
  char* dst_;
  int64_t nbytes_, piece_, pieces_ = 0;
  std::atomic<int64_t> next_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<char> done_;  // guarded by mu_
  int64_t prefix_ = 0;      // pieces complete from the start; guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace

PYBIND11_MODULE(_stage, m) {
  m.doc() = "Ordered multi-threaded host memcpy for the pinned upload stage (the first bytes are ready first).";
  py::class_<OrderedCopy>(m, "OrderedCopy")
      .def(py::init<uintptr_t, uintptr_t, int64_t, int, int64_t>(), py::arg("src"), py::arg("dst"),
           py::arg("nbytes"), py::arg("threads"), py::arg("piece") = 1 << 20,
           "Start copying nbytes from address src to address dst (non-overlapping) with `threads` threads taking "
           "`piece`-byte pieces in order. The caller keeps both buffers alive until join().")
      .def("wait", &OrderedCopy::wait, py::arg("need"),
           "Block (GIL released) until at least `need` leading bytes are copied; returns the leading bytes copied.")
      .def("ready", &OrderedCopy::ready, "Leading bytes copied so far.")
      .def_property_readonly("nbytes", &OrderedCopy::nbytes)
      .def("join", &OrderedCopy::join, "Wait for the whole copy and end its threads.");
}
