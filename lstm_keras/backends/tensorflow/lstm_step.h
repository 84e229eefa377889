// The gate math of one LSTM step for one batch row, forward (GateStep) and
// backward (GateGradients), for lstm_keras's LSTM ops (lstm_kernels.cc).
//
// The ops compute the products of the step (x_t W + h_prev U, or dz U^T)
// for a block of rows with packed_gemm.h; what is left per row is
// elementwise: the activations, the state update and, backwards, dz.
// Gate order input, forget, candidate, output; sigmoid and tanh, exactly as
// lstm_keras.LSTMCell.

#ifndef LSTM_KERAS_BACKENDS_TENSORFLOW_LSTM_STEP_H_
#define LSTM_KERAS_BACKENDS_TENSORFLOW_LSTM_STEP_H_

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "Eigen/Core"

namespace lstm_keras {

using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;

// One step of one row: activates the gates in z (the row's x_t W +
// h_prev U, bias not yet added) in place, then updates c, h and the output
// on a real step, or keeps them on a masked one.
inline void GateStep(float* z, const float* bias, int64_t units, bool real,
                     bool zero_output, float* h, float* c, float* output) {
  // Input and forget gates are adjacent: one sigmoid over both.
  ArrayMap sigmoid_gates(z, 2 * units), candidate(z + 2 * units, units),
      output_gate(z + 3 * units, units);
  sigmoid_gates =
      (sigmoid_gates + ConstArrayMap(bias, 2 * units)).logistic();
  candidate = (candidate + ConstArrayMap(bias + 2 * units, units)).tanh();
  output_gate =
      (output_gate + ConstArrayMap(bias + 3 * units, units)).logistic();
  ConstArrayMap input_gate(z, units), forget_gate(z + units, units);
  ArrayMap c_row(c, units), h_row(h, units), output_row(output, units);
  if (real) {
    c_row = forget_gate * c_row + input_gate * candidate;
    h_row = output_gate * c_row.tanh();
    output_row = h_row;
  } else if (zero_output) {
    output_row.setZero();
  }
}

// dz of one real step of one row, from the gradients reaching h_t
// (delta_out + delta_h) and c_t (delta_c), with the step's activated gates
// (input, forget, candidate, output), c_{t-1} and tanh(c_t). Leaves the
// gradient reaching c_{t-1} in delta_c and adds dz to d_bias. One pass
// over the units.
inline void GateGradients(int64_t units, const float* __restrict__ gates,
                          const float* __restrict__ c_prev,
                          const float* __restrict__ tanh_c,
                          const float* __restrict__ delta_out,
                          const float* __restrict__ delta_h,
                          float* __restrict__ delta_c, float* __restrict__ dz,
                          float* __restrict__ d_bias) {
  const float* input_gate = gates;
  const float* forget_gate = gates + units;
  const float* candidate = gates + 2 * units;
  const float* output_gate = gates + 3 * units;
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  // The same arithmetic as the loop below, 8 units at a time (GCC does not
  // vectorise that loop once inlined).
  const __m256 one = _mm256_set1_ps(1.0f);
  auto load = [](const float* p) { return _mm256_loadu_ps(p); };
  auto mul = [](__m256 a, __m256 b) { return _mm256_mul_ps(a, b); };
  auto add = [](__m256 a, __m256 b) { return _mm256_add_ps(a, b); };
  auto sub = [](__m256 a, __m256 b) { return _mm256_sub_ps(a, b); };
  for (; j + 8 <= units; j += 8) {
    const __m256 i = load(input_gate + j), f = load(forget_gate + j),
                 g = load(candidate + j), o = load(output_gate + j),
                 tc = load(tanh_c + j);
    const __m256 delta_h_t = add(load(delta_out + j), load(delta_h + j));
    const __m256 delta_c_t =
        add(load(delta_c + j),
            mul(mul(delta_h_t, o), sub(one, mul(tc, tc))));
    const __m256 dz_gates[4] = {
        mul(mul(mul(delta_c_t, g), i), sub(one, i)),
        mul(mul(mul(delta_c_t, load(c_prev + j)), f), sub(one, f)),
        mul(mul(delta_c_t, i), sub(one, mul(g, g))),
        mul(mul(mul(delta_h_t, tc), o), sub(one, o))};
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      _mm256_storeu_ps(dz + q * units + j, dz_gates[q]);
      _mm256_storeu_ps(d_bias + q * units + j,
                       add(load(d_bias + q * units + j), dz_gates[q]));
    }
    _mm256_storeu_ps(delta_c + j, mul(delta_c_t, f));
  }
#endif
  for (; j < units; ++j) {
    const float i = input_gate[j], f = forget_gate[j], g = candidate[j],
                o = output_gate[j], tc = tanh_c[j];
    const float delta_h_t = delta_out[j] + delta_h[j];
    const float delta_c_t = delta_c[j] + delta_h_t * o * (1.0f - tc * tc);
    const float dz_i = delta_c_t * g * i * (1.0f - i);
    const float dz_f = delta_c_t * c_prev[j] * f * (1.0f - f);
    const float dz_g = delta_c_t * i * (1.0f - g * g);
    const float dz_o = delta_h_t * tc * o * (1.0f - o);
    dz[j] = dz_i;
    dz[units + j] = dz_f;
    dz[2 * units + j] = dz_g;
    dz[3 * units + j] = dz_o;
    d_bias[j] += dz_i;
    d_bias[units + j] += dz_f;
    d_bias[2 * units + j] += dz_g;
    d_bias[3 * units + j] += dz_o;
    delta_c[j] = delta_c_t * f;
  }
}

}  // namespace lstm_keras

#endif  // LSTM_KERAS_BACKENDS_TENSORFLOW_LSTM_STEP_H_
