// pybind11 module triton_autogaze._rgba: numpy buffer checks (errors name the bad argument) around rgba.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <string>

#include "rgba.h"
#include "shape_str.h"

namespace py = pybind11;

namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

using triton_autogaze::shape_str;

struct Frames {
  U8Array data;  // C-contiguous; the same buffer as the caller's when it already was
  int64_t t;
  int h, w, c;
};

// Rejects rather than casts a non-uint8 array: forcecast would silently wrap floats into bytes.
Frames check_frames(const py::array& a) {
  const std::string dtype = py::str(a.dtype()).cast<std::string>();
  if (dtype != "uint8") throw py::value_error("frames: expected dtype uint8, got " + dtype);
  if (a.ndim() != 3 && a.ndim() != 4)
    throw py::value_error("frames: expected rank 4 (T, H, W, C) or 3 (H, W, C), got rank " +
                          std::to_string(a.ndim()) + " with shape " + shape_str(a));
  const py::ssize_t off = a.ndim() - 3;
  const int64_t t = off ? a.shape(0) : 1;
  const py::ssize_t h = a.shape(off), w = a.shape(off + 1), c = a.shape(off + 2);
  if (c != 3 && c != 4)
    throw py::value_error("frames: expected C (last dim) 3 (RGB) or 4 (RGBA), got " + std::to_string(c) +
                          " with shape " + shape_str(a));
  if (t < 1) throw py::value_error("frames: expected T >= 1 frames, got shape " + shape_str(a));
  if (h < 1 || w < 1 || h > INT_MAX / 4 || w > INT_MAX / 4)
    throw py::value_error("frames: expected H, W in [1, " + std::to_string(INT_MAX / 4) + "], got shape " +
                          shape_str(a));
  return {U8Array::ensure(a), t, static_cast<int>(h), static_cast<int>(w), static_cast<int>(c)};
}

int check_size(const char* name, int64_t v) {
  if (v < 1 || v > INT_MAX / 4)
    throw py::value_error(std::string(name) + ": expected an output size in [1, " + std::to_string(INT_MAX / 4) +
                          "], got " + std::to_string(v));
  return static_cast<int>(v);
}

int check_threads(int num_threads) {
  if (num_threads < 0)
    throw py::value_error("num_threads: expected >= 0 (0 = auto), got " + std::to_string(num_threads));
  return num_threads;
}

py::tuple output_size(int64_t height, int64_t width, int64_t shortest_edge) {
  if (height < 1 || width < 1)
    throw py::value_error("height, width: expected >= 1, got (" + std::to_string(height) + ", " +
                          std::to_string(width) + ")");
  if (shortest_edge < 1) throw py::value_error("shortest_edge: expected >= 1, got " + std::to_string(shortest_edge));
  auto [oh, ow] = rgba::output_size(height, width, shortest_edge);
  return py::make_tuple(oh, ow);
}

py::tuple resize_coeffs(int64_t in_size, int64_t out_size) {
  const rgba::ResizeCoeffs c = rgba::resize_coeffs(check_size("in_size", in_size), check_size("out_size", out_size));
  py::array_t<int32_t> lo(c.out_size), count(c.out_size);
  py::array_t<int32_t> weights({static_cast<py::ssize_t>(c.out_size), static_cast<py::ssize_t>(c.ksize)});
  std::copy(c.lo.begin(), c.lo.end(), lo.mutable_data());
  std::copy(c.count.begin(), c.count.end(), count.mutable_data());
  std::copy(c.weights.begin(), c.weights.end(), weights.mutable_data());
  return py::make_tuple(lo, count, weights);
}

py::array_t<uint8_t> resize(const py::array& frames, int64_t out_height, int64_t out_width, int num_threads) {
  Frames f = check_frames(frames);
  const int oh = check_size("out_height", out_height), ow = check_size("out_width", out_width);
  check_threads(num_threads);
  py::array_t<uint8_t> out({static_cast<py::ssize_t>(f.t), static_cast<py::ssize_t>(oh),
                            static_cast<py::ssize_t>(ow), static_cast<py::ssize_t>(3)});
  const uint8_t* src = f.data.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    rgba::resize_batch(src, f.t, f.h, f.w, f.c, oh, ow, dst, num_threads);
  }
  return out;
}

py::array_t<float> preprocess(const py::array& frames, int64_t shortest_edge, bool do_resize, bool do_rescale,
                              double rescale_factor, bool offset, bool do_normalize,
                              std::array<double, 3> image_mean, std::array<double, 3> image_std,
                              int num_threads) {
  Frames f = check_frames(frames);
  check_threads(num_threads);
  int oh = f.h, ow = f.w;
  if (do_resize) {
    if (shortest_edge < 1)
      throw py::value_error("shortest_edge: expected >= 1, got " + std::to_string(shortest_edge));
    auto [h2, w2] = rgba::output_size(f.h, f.w, shortest_edge);
    oh = check_size("output height", h2);
    ow = check_size("output width", w2);
  }
  rgba::Affine affine{do_rescale, rescale_factor, offset, do_normalize, {}, {}};
  for (int c = 0; c < 3; ++c) {
    if (do_normalize && static_cast<float>(image_std[c]) == 0.0f)
      throw py::value_error("image_std: expected non-zero values, got 0 at channel " + std::to_string(c));
    affine.mean[c] = static_cast<float>(image_mean[c]);
    affine.std[c] = static_cast<float>(image_std[c]);
  }
  py::array_t<float> out({static_cast<py::ssize_t>(f.t), static_cast<py::ssize_t>(3), static_cast<py::ssize_t>(oh),
                          static_cast<py::ssize_t>(ow)});
  const uint8_t* src = f.data.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    rgba::preprocess_batch(src, f.t, f.h, f.w, f.c, oh, ow, affine, dst, num_threads);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_rgba, m) {
  m.doc() = "AutoGaze preprocessing core: uint8 RGB/RGBA frames -> Pillow-exact bilinear resize -> float32 CHW.";
  m.def("output_size", &output_size, py::arg("height"), py::arg("width"), py::arg("shortest_edge"),
        "Shortest-edge output size (out_height, out_width), truncated like upstream's int(S * long / short).");
  m.def("resize_coeffs", &resize_coeffs, py::arg("in_size"), py::arg("out_size"),
        "Pillow bilinear taps for one axis: (lo [M] int32, count [M] int32, weights [M, K] int32 fixed-point).");
  m.def("resize", &resize, py::arg("frames"), py::arg("out_height"), py::arg("out_width"), py::arg("num_threads") = 0,
        "frames [T, H, W, 3|4] or [H, W, 3|4] uint8 -> [T, out_height, out_width, 3] uint8, Pillow BILINEAR.");
  m.def("preprocess", &preprocess, py::arg("frames"), py::kw_only(), py::arg("shortest_edge"),
        py::arg("do_resize") = true, py::arg("do_rescale") = true, py::arg("rescale_factor") = 1.0 / 127.5,
        py::arg("offset") = true, py::arg("do_normalize") = true,
        py::arg("image_mean") = std::array<double, 3>{0.485, 0.456, 0.406},
        py::arg("image_std") = std::array<double, 3>{0.229, 0.224, 0.225}, py::arg("num_threads") = 0,
        "frames [T, H, W, 3|4] or [H, W, 3|4] uint8 -> [T, 3, H', W'] float32 (SPEC §2.1).");
  m.attr("PRECISION_BITS") = rgba::kPrecisionBits;
}
