// Shape checks for lstm_keras's LSTM ops (lstm_kernels.cc), in their
// kernels and in their shape functions, with the same messages: each names
// the input, the dimension, the size it must equal and both values, as
// TensorFlow's own kernels do, e.g.
//
//   h0.dims(0) != batch_size: 3 vs. 2
//   mask must be rank 2 [batch_size, timesteps], got shape [6]
//
// Eagerly the kernels check; in a graph the shape functions check first,
// with whatever sizes are known then.

#ifndef LSTM_KERAS_BACKENDS_TENSORFLOW_SHAPE_CHECKS_H_
#define LSTM_KERAS_BACKENDS_TENSORFLOW_SHAPE_CHECKS_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/errors.h"

namespace lstm_keras {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// A dimension an input must have, in a kernel: the name of the size and its
// value, or kAnySize where the input itself defines the size.
struct NamedSize {
  const char* name;
  int64_t value;
};
constexpr int64_t kAnySize = -1;

// The same in a shape function, where sizes may be unknown.
struct NamedDim {
  const char* name;
  DimensionHandle dim;
};

// "h0 must be rank 2 [batch_size, units], got shape [3]".
template <typename Named>
absl::Status RankError(const char* input, std::initializer_list<Named> dims,
                       const std::string& shape) {
  std::string names;
  for (const Named& dim : dims) {
    if (!names.empty()) names += ", ";
    names += dim.name;
  }
  return absl::InvalidArgumentError(absl::StrCat(input, " must be rank ",
                                                dims.size(), " [", names,
                                                "], got shape ", shape));
}

// "h0.dims(0) != batch_size: 3 vs. 2".
template <typename Value>
absl::Status DimError(const char* input, int index, const char* name,
                      const Value& got, const Value& expected) {
  return absl::InvalidArgumentError(absl::StrCat(
      input, ".dims(", index, ") != ", name, ": ", got, " vs. ", expected));
}

// OK when the input tensor `input` has exactly the dimensions `dims`.
inline absl::Status CheckShape(const char* input,
                               const ::tensorflow::Tensor& tensor,
                               std::initializer_list<NamedSize> dims) {
  if (tensor.dims() != static_cast<int>(dims.size())) {
    return RankError(input, dims, tensor.shape().DebugString());
  }
  int index = 0;
  for (const NamedSize& dim : dims) {
    const int64_t got = tensor.dim_size(index);
    if (dim.value != kAnySize && got != dim.value) {
      return DimError(input, index, dim.name, got, dim.value);
    }
    ++index;
  }
  return absl::OkStatus();
}

// The shape function's CheckShape: OK when the shape of input `input` can
// have the dimensions `dims` (unknown sizes match anything); `shape` is
// that shape, of known rank.
inline absl::Status CheckShape(InferenceContext* c, const char* input,
                               std::initializer_list<NamedDim> dims,
                               ShapeHandle* shape) {
  std::vector<ShapeHandle> shapes;
  TF_RETURN_IF_ERROR(c->input(input, &shapes));
  if (!c->WithRank(shapes[0], dims.size(), shape).ok()) {
    return RankError(input, dims, c->DebugString(shapes[0]));
  }
  int index = 0;
  for (const NamedDim& dim : dims) {
    const DimensionHandle got = c->Dim(*shape, index);
    DimensionHandle merged;
    if (!c->Merge(got, dim.dim, &merged).ok()) {
      return DimError(input, index, dim.name, c->DebugString(got),
                      c->DebugString(dim.dim));
    }
    ++index;
  }
  return absl::OkStatus();
}

// mask and recurrent_mask may be empty (no mask, no recurrent dropout): a
// shape function checks them only where their shape says they are not
// (known rank other than 1, no dimension known to be 0); the kernels check
// every one that holds elements.
inline absl::Status CheckOptionalShape(InferenceContext* c, const char* input,
                                       std::initializer_list<NamedDim> dims) {
  std::vector<ShapeHandle> shapes;
  TF_RETURN_IF_ERROR(c->input(input, &shapes));
  const ShapeHandle shape = shapes[0];
  if (!c->RankKnown(shape) || c->Rank(shape) == 1) return absl::OkStatus();
  for (int index = 0; index < c->Rank(shape); ++index) {
    if (c->Value(c->Dim(shape, index)) == 0) return absl::OkStatus();
  }
  ShapeHandle unused;
  return CheckShape(c, input, dims, &unused);
}

}  // namespace lstm_keras

#endif  // LSTM_KERAS_BACKENDS_TENSORFLOW_SHAPE_CHECKS_H_
