// "(2, 3)"-style shape strings for the bindings' error messages (Python's tuple spelling, "(5,)" for 1-D).
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <string>
#include <vector>

namespace triton_autogaze {

// Plain std::string appends, not std::ostringstream: on the lent H100 host (g++ 13.3, libstdc++ 6.0.33, Python
// 3.12, numpy 2.5) the first error message built through an ostringstream crashed the process (session 20).
template <class Dims>
inline std::string tuple_str(const Dims& dims, size_t n) {
  std::string s = "(";
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ", ";
    s += std::to_string(static_cast<long long>(dims(i)));
  }
  s += n == 1 ? ",)" : ")";
  return s;
}

inline std::string shape_str(const pybind11::array& a) {
  return tuple_str([&](size_t i) { return a.shape(static_cast<pybind11::ssize_t>(i)); }, a.ndim());
}

inline std::string shape_str(const std::vector<int64_t>& v) {
  return tuple_str([&](size_t i) { return v[i]; }, v.size());
}

}  // namespace triton_autogaze
