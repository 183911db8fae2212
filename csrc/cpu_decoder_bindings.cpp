// pybind11 module triton_autogaze._cpu_decoder: buffer checks (errors name the bad argument) around cpu_decoder.cpp.
// Arrays are numpy views of contiguous CPU torch tensors; nothing here depends on torch at build time.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_decoder.h"
#include "shape_str.h"

namespace py = pybind11;

namespace {

using triton_autogaze::shape_str;

// Checks dtype, C-contiguity and shape (-1 = any) and returns the data pointer (no copy, ever).
template <class T>
T* buffer(const py::array& a, const char* name, const char* dtype, const std::vector<int64_t>& shape) {
  using Elem = typename std::remove_const<T>::type;
  if (a.dtype().num() != py::dtype::of<Elem>().num())  // (the dtype's name only for the message: it is slow)
    throw py::value_error(std::string(name) + ": expected dtype " + dtype + ", got " +
                          py::str(a.dtype()).cast<std::string>());
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array, got strides of shape " +
                          shape_str(a));
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok)
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(shape) + " (-1 = any), got " +
                          shape_str(a));
  if (!a.writeable() && !std::is_const<T>::value)
    throw py::value_error(std::string(name) + ": expected a writeable array");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

const float* weights(const py::array& a, const char* name, const std::vector<int64_t>& shape) {
  return buffer<const float>(a, name, "float32", shape);
}

std::mutex& forward_lock() {
  static std::mutex m;
  return m;
}

class Decoder {
 public:
  Decoder(int hidden, int heads, int head_dim, int intermediate, double eps, const std::vector<py::dict>& layers,
          const py::array& norm, const py::array& head_weights) {
    if (hidden < 16 || hidden % 16 || intermediate < 16 || intermediate % 16 || head_dim < 16 || head_dim % 16 ||
        head_dim > 256 || heads * head_dim != hidden)
      throw py::value_error("decoder sizes: expected hidden, intermediate, head_dim multiples of 16, head_dim <= 256, "
                            "heads * head_dim == hidden; got hidden " + std::to_string(hidden) + ", heads " +
                            std::to_string(heads) + ", head_dim " + std::to_string(head_dim) + ", intermediate " +
                            std::to_string(intermediate));
    if (layers.empty()) throw py::value_error("layers: expected at least one layer");
    m_.C = hidden;
    m_.H = heads;
    m_.D = head_dim;
    m_.I = intermediate;
    m_.eps = static_cast<float>(eps);
    const int64_t C = hidden, I = intermediate, P = 16;
    for (const py::dict& d : layers) {
      auto get = [&](const char* key) {
        if (!d.contains(key)) throw py::value_error(std::string("layers: a layer dict has no '") + key + "'");
        py::array a = d[key].cast<py::array>();
        keep_.push_back(a);
        return a;
      };
      cpudec::LayerWeights w{};
      w.ln1 = weights(get("ln1"), "ln1", {C});
      w.wqkv = weights(get("wqkv"), "wqkv", {3 * C / P, C, P});
      w.wo = weights(get("wo"), "wo", {C / P, C, P});
      w.ln2 = weights(get("ln2"), "ln2", {C});
      w.wgu = weights(get("wgu"), "wgu", {2 * I / P, C, P});
      w.wdown = weights(get("wdown"), "wdown", {C / P, I, P});
      m_.layers.push_back(w);
    }
    keep_.push_back(norm);
    keep_.push_back(head_weights);
    m_.norm = weights(norm, "norm", {C});
    m_.heads = weights(head_weights, "head_weights", {-1, C, P});
    m_.n_out = static_cast<int>(head_weights.shape(0) * P);
  }

  // See cpudec::forward. x [B, n, C], cos/sin [B, n, D], kp [L, B, H, cap/16, D, 16], v [L, B, H, cap, D],
  // keymask [B, cap] uint8, out [B, C].
  void forward(const py::array& x, const py::array& cos, const py::array& sin, const py::array& kp,
               const py::array& v, const py::array& keymask, int64_t L0, const py::array& out, int num_threads) {
    const int64_t C = m_.C, H = m_.H, D = m_.D, L = m_.layers.size();
    if (x.ndim() != 3) throw py::value_error("x: expected shape (B, n, C), got " + shape_str(x));
    const int64_t B = x.shape(0), n = x.shape(1);
    if (B < 1 || n < 1) throw py::value_error("x: expected B >= 1 and n >= 1, got " + shape_str(x));
    const float* xp = buffer<const float>(x, "x", "float32", {B, n, C});
    const float* cp = buffer<const float>(cos, "cos", "float32", {B, n, D});
    const float* sp = buffer<const float>(sin, "sin", "float32", {B, n, D});
    if (keymask.ndim() != 2) throw py::value_error("keymask: expected shape (B, cap), got " + shape_str(keymask));
    const int64_t cap = keymask.shape(1);
    if (cap % 16) throw py::value_error("keymask: expected a capacity that is a multiple of 16, got " +
                                        shape_str(keymask));
    if (L0 < 0 || L0 + n > cap)
      throw py::value_error("L0: expected 0 <= L0 and L0 + n <= capacity " + std::to_string(cap) + ", got L0 " +
                            std::to_string(L0) + ", n " + std::to_string(n));
    cpudec::Cache cache{buffer<float>(kp, "kp", "float32", {L, B, H, cap / 16, D, 16}),
                        buffer<float>(v, "v", "float32", {L, B, H, cap, D}),
                        buffer<const uint8_t>(keymask, "keymask", "uint8", {B, cap}), B, cap};
    float* op = buffer<float>(out, "out", "float32", {B, C});
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(forward_lock());
    cpudec::forward(m_, cache, xp, cp, sp, B, n, L0, op, num_threads);
  }

  // out [M, n_out] = h [M, C] @ head_weights^T.
  void heads(const py::array& h, const py::array& out, int num_threads) {
    if (h.ndim() != 2) throw py::value_error("h: expected shape (M, C), got " + shape_str(h));
    const int64_t M = h.shape(0);
    const float* hp = buffer<const float>(h, "h", "float32", {M, m_.C});
    float* op = buffer<float>(out, "out", "float32", {M, m_.n_out});
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(forward_lock());
    cpudec::heads(m_, hp, M, op, num_threads);
  }

  int n_out() const { return m_.n_out; }

 private:
  cpudec::Model m_;
  std::vector<py::array> keep_;  // the weight buffers stay alive as long as the decoder
};

// out [M, N] = x [M, K] @ W^T with W panel-packed [N/16, K, 16] (a test hook for the GEMM kernel).
void linear(const py::array& x, const py::array& w_packed, const py::array& out, int num_threads) {
  if (x.ndim() != 2 || w_packed.ndim() != 3)
    throw py::value_error("x, w_packed: expected shapes (M, K) and (N/16, K, 16), got " + shape_str(x) + " and " +
                          shape_str(w_packed));
  const int64_t M = x.shape(0), K = x.shape(1), N = w_packed.shape(0) * 16;
  const float* xp = buffer<const float>(x, "x", "float32", {M, K});
  const float* wp = buffer<const float>(w_packed, "w_packed", "float32", {N / 16, K, 16});
  float* op = buffer<float>(out, "out", "float32", {M, N});
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lk(forward_lock());
  cpudec::linear(xp, M, K, wp, N, op, num_threads);
}

// See cpudec::choose. logits [B, K, V] float32, ids [B, L] int64, out_ids [B, K] int64, out_conf [B, K] float32.
int64_t choose(const py::array& logits, const py::array& ids, int64_t budget, int64_t eos, const py::array& out_ids,
               const py::array& out_conf) {
  if (logits.ndim() != 3) throw py::value_error("logits: expected shape (B, K, V), got " + shape_str(logits));
  const int64_t B = logits.shape(0), K = logits.shape(1), V = logits.shape(2);
  if (ids.ndim() != 2) throw py::value_error("ids: expected shape (B, L), got " + shape_str(ids));
  const int64_t L = ids.shape(1);
  const float* lp = buffer<const float>(logits, "logits", "float32", {B, K, V});
  const int64_t* ip = buffer<const int64_t>(ids, "ids", "int64", {B, L});
  int64_t* op = buffer<int64_t>(out_ids, "out_ids", "int64", {B, K});
  float* cp = buffer<float>(out_conf, "out_conf", "float32", {B, K});
  py::gil_scoped_release release;
  return cpudec::choose(lp, B, K, V, ip, L, budget, eos, op, cp);
}

bool supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

PYBIND11_MODULE(_cpu_decoder, m) {
  m.doc() = "AutoGaze fused fp32 CPU decoder forward over a static KV cache (AVX2 + FMA).";
  m.def("supported", &supported, "True when this CPU has AVX2 and FMA (the kernels need both).");
  m.def("linear", &linear, py::arg("x"), py::arg("w_packed"), py::arg("out"), py::arg("num_threads") = 1,
        "out [M, N] = x [M, K] @ W^T, W panel-packed [N/16, K, 16] float32.");
  m.def("choose", &choose, py::arg("logits"), py::arg("ids"), py::arg("budget"), py::arg("eos"), py::arg("out_ids"),
        py::arg("out_conf"),
        "The greedy 10-token choice of one step (finite logits); returns the number of heads that chose, or -1.");
  py::class_<Decoder>(m, "Decoder")
      .def(py::init<int, int, int, int, double, const std::vector<py::dict>&, const py::array&, const py::array&>(),
           py::arg("hidden"), py::arg("heads"), py::arg("head_dim"), py::arg("intermediate"), py::arg("eps"),
           py::arg("layers"), py::arg("norm"), py::arg("head_weights"))
      .def("forward", &Decoder::forward, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("kp"), py::arg("v"),
           py::arg("keymask"), py::arg("L0"), py::arg("out"), py::arg("num_threads") = 1)
      .def("heads", &Decoder::heads, py::arg("h"), py::arg("out"), py::arg("num_threads") = 1)
      .def_property_readonly("n_out", &Decoder::n_out);
}
