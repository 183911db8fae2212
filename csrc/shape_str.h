// "(2, 3)"-style shape strings for the bindings' error messages (Python's tuple spelling, "(5,)" for 1-D).
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace triton_autogaze {

template <class Dims>
inline std::string tuple_str(const Dims& dims, size_t n) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < n; ++i) s << (i ? ", " : "") << dims(i);
  s << (n == 1 ? ",)" : ")");
  return s.str();
}

inline std::string shape_str(const pybind11::array& a) {
  return tuple_str([&](size_t i) { return a.shape(static_cast<pybind11::ssize_t>(i)); }, a.ndim());
}

inline std::string shape_str(const std::vector<int64_t>& v) {
  return tuple_str([&](size_t i) { return v[i]; }, v.size());
}

}  // namespace triton_autogaze
