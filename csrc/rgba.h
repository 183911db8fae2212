// AutoGaze image preprocessing core: uint8 RGB/RGBA frames -> Pillow-exact bilinear resize -> float32 CHW.
// Plain C++ over raw buffers (no Python, no torch); bindings.cpp validates and wraps it. See SPEC §2.1.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace rgba {

// Pillow's fixed point: 32 bits less 8 for the pixel and 2 of headroom for filters with negative lobes.
constexpr int kPrecisionBits = 22;

// Per-axis resampling taps for an n -> m resize, as Pillow's precompute_coeffs + normalize_coeffs_8bpc.
struct ResizeCoeffs {
  int in_size = 0;
  int out_size = 0;
  int ksize = 0;                 // taps reserved per output index: 2 * ceil(support) + 1
  std::vector<int32_t> lo;       // [out_size] first input index read
  std::vector<int32_t> count;    // [out_size] taps used (<= ksize)
  std::vector<int32_t> weights;  // [out_size * ksize] fixed-point, zero past count
};

// Rescale / offset / normalise applied to each uint8 value after the resize.
struct Affine {
  bool do_rescale = true;
  double rescale_factor = 1.0 / 127.5;
  bool offset = true;
  bool do_normalize = true;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

// Shortest-edge rule: the short side becomes `shortest_edge`, the long one int(S * long / short) in double.
// Returns (out_h, out_w).
std::pair<int64_t, int64_t> output_size(int64_t height, int64_t width, int64_t shortest_edge);

// Antialiased bilinear taps; in_size, out_size >= 1.
ResizeCoeffs resize_coeffs(int in_size, int out_size);

// uint8 -> float32 table [3 * 256], table[c * 256 + u]; exact because the affine depends on u and c only.
std::vector<float> affine_table(const Affine& affine);

// Resolved worker count: hardware threads, capped by num_threads (> 0) and by the number of frames.
int resolve_threads(int num_threads, int64_t frames);

// Frames are C-contiguous [T, H, W, pixel_stride] uint8 with pixel_stride 3 (RGB) or 4 (RGBA, alpha ignored).
// resize_batch writes uint8 [T, out_h, out_w, 3]; preprocess_batch writes float32 [T, 3, out_h, out_w].
// Frames run in parallel on up to resolve_threads(num_threads, T) std::threads.
void resize_batch(const uint8_t* frames, int64_t t, int h, int w, int pixel_stride, int out_h, int out_w,
                  uint8_t* out, int num_threads);
void preprocess_batch(const uint8_t* frames, int64_t t, int h, int w, int pixel_stride, int out_h, int out_w,
                      const Affine& affine, float* out, int num_threads);

}  // namespace rgba
