// Pillow-exact antialiased bilinear resize (two 1-D fixed-point passes, uint8 intermediate) and the
// processor's affine, per frame; frames spread over a small std::thread pool.
#include "rgba.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

// Pillow computes taps in plain double; a contracted multiply-add would move their last bits.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace rgba {
namespace {

constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

inline double bilinear(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Per-frame buffers, one set per worker so frames never share memory.
struct Scratch {
  std::vector<uint8_t> mid;  // horizontal pass output, [rows, out_w, 3]
  std::vector<uint8_t> row;  // one finished output row, [out_w, 3]
  std::vector<int32_t> acc;  // vertical pass accumulators, [out_w * 3]
};

struct Plan {
  int h, w, ps, out_h, out_w;
  bool do_h, do_v;  // Pillow skips a pass whose axis keeps its size
  ResizeCoeffs ch, cv;
  int row_begin, row_end;  // source rows the vertical pass reads
};

Plan make_plan(int h, int w, int ps, int out_h, int out_w) {
  Plan p{h, w, ps, out_h, out_w, out_w != w, out_h != h, {}, {}, 0, h};
  if (p.do_h) p.ch = resize_coeffs(w, out_w);
  if (p.do_v) {
    p.cv = resize_coeffs(h, out_h);
    p.row_begin = p.cv.lo.front();
    p.row_end = p.cv.lo.back() + p.cv.count.back();
  }
  return p;
}

template <int PS>
void horizontal_pass(const uint8_t* src, int w, int row_begin, int row_end, const ResizeCoeffs& c,
                     uint8_t* out) {
  const int ow = c.out_size;
  for (int y = row_begin; y < row_end; ++y) {
    const uint8_t* in = src + static_cast<size_t>(y) * w * PS;
    uint8_t* o = out + static_cast<size_t>(y - row_begin) * ow * 3;
    for (int x = 0; x < ow; ++x) {
      const int32_t* k = &c.weights[static_cast<size_t>(x) * c.ksize];
      const uint8_t* p = in + static_cast<size_t>(c.lo[x]) * PS;
      int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
      for (int i = 0, n = c.count[x]; i < n; ++i) {
        s0 += p[i * PS + 0] * k[i];
        s1 += p[i * PS + 1] * k[i];
        s2 += p[i * PS + 2] * k[i];
      }
      o[x * 3 + 0] = clip8(s0);
      o[x * 3 + 1] = clip8(s1);
      o[x * 3 + 2] = clip8(s2);
    }
  }
}

// Row-major accumulation instead of Pillow's per-pixel loop: same integer sums, contiguous reads.
template <int PS>
void vertical_row(const uint8_t* first, size_t row_stride, int cols, const int32_t* k, int count,
                  int32_t* acc, uint8_t* out) {
  const int n = cols * 3;
  std::fill(acc, acc + n, kHalf);
  for (int i = 0; i < count; ++i) {
    const uint8_t* r = first + i * row_stride;
    const int32_t ki = k[i];
    if constexpr (PS == 3) {
      for (int j = 0; j < n; ++j) acc[j] += r[j] * ki;
    } else {
      for (int x = 0; x < cols; ++x)
        for (int ch = 0; ch < 3; ++ch) acc[x * 3 + ch] += r[x * PS + ch] * ki;
    }
  }
  for (int j = 0; j < n; ++j) out[j] = clip8(acc[j]);
}

template <int PS>
void copy_row(const uint8_t* in, int cols, uint8_t* out) {
  for (int x = 0; x < cols; ++x)
    for (int ch = 0; ch < 3; ++ch) out[x * 3 + ch] = in[x * PS + ch];
}

// Resizes one frame and hands each finished uint8 RGB row to sink(y, row).
template <class Sink>
void run_frame(const Plan& p, const uint8_t* src, Scratch& s, Sink&& sink) {
  const uint8_t* mid = src;
  int mid_ps = p.ps;
  size_t stride = static_cast<size_t>(p.w) * p.ps;
  int mid_row0 = 0;
  if (p.do_h) {
    s.mid.resize(static_cast<size_t>(p.row_end - p.row_begin) * p.out_w * 3);
    if (p.ps == 4)
      horizontal_pass<4>(src, p.w, p.row_begin, p.row_end, p.ch, s.mid.data());
    else
      horizontal_pass<3>(src, p.w, p.row_begin, p.row_end, p.ch, s.mid.data());
    mid = s.mid.data();
    mid_ps = 3;
    stride = static_cast<size_t>(p.out_w) * 3;
    mid_row0 = p.row_begin;
  }
  s.row.resize(static_cast<size_t>(p.out_w) * 3);
  s.acc.resize(static_cast<size_t>(p.out_w) * 3);
  for (int y = 0; y < p.out_h; ++y) {
    if (p.do_v) {
      const uint8_t* first = mid + static_cast<size_t>(p.cv.lo[y] - mid_row0) * stride;
      const int32_t* k = &p.cv.weights[static_cast<size_t>(y) * p.cv.ksize];
      if (mid_ps == 4)
        vertical_row<4>(first, stride, p.out_w, k, p.cv.count[y], s.acc.data(), s.row.data());
      else
        vertical_row<3>(first, stride, p.out_w, k, p.cv.count[y], s.acc.data(), s.row.data());
    } else {
      const uint8_t* in = mid + static_cast<size_t>(y - mid_row0) * stride;
      if (mid_ps == 4)
        copy_row<4>(in, p.out_w, s.row.data());
      else
        copy_row<3>(in, p.out_w, s.row.data());
    }
    sink(y, s.row.data());
  }
}

// Work-stealing over frames; the first exception from any worker is rethrown on the caller's thread.
template <class Fn>
void for_each_frame(int64_t t, int num_threads, Fn&& fn) {
  const int workers = resolve_threads(num_threads, t);
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto work = [&]() {
    Scratch s;
    try {
      for (int64_t f; (f = next.fetch_add(1)) < t;) fn(f, s);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      next.store(t);
    }
  };
  if (workers <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (int i = 1; i < workers; ++i) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace

std::pair<int64_t, int64_t> output_size(int64_t height, int64_t width, int64_t shortest_edge) {
  // Upstream is Python: int(S * long / short), an exact integer product then a rounded double quotient.
  if (width <= height) {
    return {static_cast<int64_t>(static_cast<double>(shortest_edge * height) / static_cast<double>(width)),
            shortest_edge};
  }
  return {shortest_edge,
          static_cast<int64_t>(static_cast<double>(shortest_edge * width) / static_cast<double>(height))};
}

ResizeCoeffs resize_coeffs(int in_size, int out_size) {
  ResizeCoeffs c;
  c.in_size = in_size;
  c.out_size = out_size;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);  // widen the triangle when shrinking: antialiasing
  const double support = 1.0 * filterscale;
  const double ss = 1.0 / filterscale;  // Pillow multiplies by the reciprocal, not divides
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.lo.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = bilinear((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      const double fixed = v * (1 << kPrecisionBits);
      k[x] = static_cast<int32_t>(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.lo[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

std::vector<float> affine_table(const Affine& a) {
  std::vector<float> table(3 * 256);
  for (int ch = 0; ch < 3; ++ch) {
    for (int u = 0; u < 256; ++u) {
      float x = static_cast<float>(u);
      if (a.do_rescale) {
        // Upstream multiplies in float64, stores float32, then subtracts the offset in float32.
        x = static_cast<float>(static_cast<double>(u) * a.rescale_factor);
        if (a.offset) x = x - 1.0f;
      }
      if (a.do_normalize) x = (x - a.mean[ch]) / a.std[ch];
      table[ch * 256 + u] = x;
    }
  }
  return table;
}

int resolve_threads(int num_threads, int64_t frames) {
  int64_t n = std::max(1u, std::thread::hardware_concurrency());
  if (num_threads > 0) n = std::min<int64_t>(n, num_threads);
  return static_cast<int>(std::max<int64_t>(1, std::min(n, frames)));
}

void resize_batch(const uint8_t* frames, int64_t t, int h, int w, int pixel_stride, int out_h, int out_w,
                  uint8_t* out, int num_threads) {
  const Plan plan = make_plan(h, w, pixel_stride, out_h, out_w);
  const size_t in_frame = static_cast<size_t>(h) * w * pixel_stride;
  const size_t out_row = static_cast<size_t>(out_w) * 3;
  for_each_frame(t, num_threads, [&](int64_t f, Scratch& s) {
    uint8_t* dst = out + f * out_row * out_h;
    run_frame(plan, frames + f * in_frame, s,
              [&](int y, const uint8_t* row) { std::memcpy(dst + y * out_row, row, out_row); });
  });
}

void preprocess_batch(const uint8_t* frames, int64_t t, int h, int w, int pixel_stride, int out_h, int out_w,
                      const Affine& affine, float* out, int num_threads) {
  const Plan plan = make_plan(h, w, pixel_stride, out_h, out_w);
  const std::vector<float> table = affine_table(affine);
  const size_t in_frame = static_cast<size_t>(h) * w * pixel_stride;
  const size_t plane = static_cast<size_t>(out_h) * out_w;
  for_each_frame(t, num_threads, [&](int64_t f, Scratch& s) {
    float* dst = out + f * 3 * plane;
    run_frame(plan, frames + f * in_frame, s, [&](int y, const uint8_t* row) {
      for (int ch = 0; ch < 3; ++ch) {
        const float* lut = &table[ch * 256];
        float* o = dst + ch * plane + static_cast<size_t>(y) * out_w;
        for (int x = 0; x < out_w; ++x) o[x] = lut[row[x * 3 + ch]];
      }
    });
  });
}

}  // namespace rgba
