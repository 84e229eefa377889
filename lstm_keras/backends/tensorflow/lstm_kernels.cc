// The LSTM recurrence as two TensorFlow CPU ops, for lstm_keras's fast path.
//
// LstmKerasSequence runs the whole sequence: it projects the inputs
// (x_t @ W + b) a chunk of timesteps at a time, then for each step multiplies
// h_prev @ U and applies the gates, exactly as lstm_keras.LSTMCell does
// (gate order input, forget, candidate, output; sigmoid and tanh). Masked
// steps keep h and c and output zeros (zero_output_for_mask) or the previous
// output, as dispatch.generic_lstm_sequence does. With save_for_backward it
// also returns what LstmKerasSequenceGrad and the weight gradients need: the
// activated gates (computed in place in that output), the cell states c_t
// and the states h_prev entering each step; without, its memory does not
// grow with T beyond the outputs asked for.
//
// LstmKerasSequenceGrad runs backpropagation through time and returns every
// gradient: of x (unless compute_d_x is false), W, U, the bias, h_0 and c_0.
// It sums dW = x^T dz and dU = h_prev^T dz per thread over blocks of
// (row, step) samples as it goes, so dz [B, T, 4H] never exists whole.
//
// The recurrence is independent per batch row, so both ops split the batch
// into one contiguous block of rows per CPU worker thread, and each block
// runs the whole time loop on its own rows: no per-step synchronisation.
// The matmuls by W, U and U^T (small: a block's rows by 4H) use the same
// three matrices on every step, so each op packs them once into column
// panels and multiplies with register-tiled AVX2/FMA micro-kernels (plain
// C++ loops where AVX2/FMA is not available at compile time).
//
// Layouts: x [B, T, D], W [D, 4H], b [4H], U [H, 4H], h0, c0 [B, H],
// mask [B, T] float (1 real, 0 padded) or an empty tensor, outputs
// [B, T or 1, H], saved tensors [B, T, .] in processing order (reversed
// time when go_backwards).

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace lstm_keras {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;

// Timesteps projected per input GEMM: large enough for an efficient GEMM,
// small enough that the buffer stays in cache and memory stays flat in T.
constexpr int64_t kChunk = 32;

// A right-hand matrix B [K, N] packed once per op call into panels of
// kPanel columns, each panel K contiguous rows of kPanel floats (zero padded
// past N). Eigen would repack U on every step of every block; packed once,
// each step streams U straight into the micro-kernels below.
constexpr int64_t kPanel = 16;

class PackedMatrix {
 public:
  // Packs B where B(k, n) = data[k * k_stride + n * n_stride].
  PackedMatrix(const float* data, int64_t k_size, int64_t n_size,
               int64_t k_stride, int64_t n_stride)
      : k_size_(k_size),
        n_size_(n_size),
        panels_((n_size + kPanel - 1) / kPanel),
        data_(panels_ * k_size * kPanel, 0.0f) {
    for (int64_t p = 0; p < panels_; ++p) {
      const int64_t width = std::min(kPanel, n_size - p * kPanel);
      for (int64_t k = 0; k < k_size; ++k) {
        float* out = data_.data() + (p * k_size + k) * kPanel;
        for (int64_t j = 0; j < width; ++j) {
          out[j] = data[k * k_stride + (p * kPanel + j) * n_stride];
        }
      }
    }
  }
  int64_t k_size() const { return k_size_; }
  int64_t n_size() const { return n_size_; }
  int64_t panels() const { return panels_; }
  // Floats from one panel to the next.
  int64_t panel_stride() const { return k_size_ * kPanel; }
  const float* panel(int64_t p) const {
    return data_.data() + p * panel_stride();
  }

 private:
  int64_t k_size_, n_size_, panels_;
  std::vector<float> data_;
};

// The right-hand operand B [K, N] of the products below, as panels of kPanel
// columns: element (k, p * kPanel + j) is at
// data[p * panel_stride + k * k_stride + j]: a PackedMatrix, or what
// PackPanels writes.
struct Panels {
  const float* data;
  int64_t panel_stride, k_stride, k_size, n_size;
  int64_t panels() const { return (n_size + kPanel - 1) / kPanel; }
  const float* panel(int64_t p) const { return data + p * panel_stride; }

  static Panels Of(const PackedMatrix& b) {
    return {b.panel(0), b.panel_stride(), kPanel, b.k_size(), b.n_size()};
  }

};

// The left-hand operand A [rows, K], row-major: element (i, k) is at
// data[i * row_stride + k].
struct Rows {
  const float* data;
  int64_t row_stride;
  Rows Offset(int64_t rows) const {
    return {data + rows * row_stride, row_stride};
  }
};

#if defined(__AVX2__) && defined(__FMA__)

// c[MR, NP panels] (+)= a[MR, K] @ the NP panels starting at `panel`, with
// the products in registers: MR * NP * 2 accumulators of 8 floats. Only the
// first `width` columns of c are written (the last panel may be partial).
template <int MR, int NP, bool kAccumulate>
inline void MicroKernel(Rows a, const Panels& b, const float* panel,
                        float* c, int64_t ldc, int64_t width) {
  __m256 acc[MR][2 * NP];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int q = 0; q < 2 * NP; ++q) acc[i][q] = _mm256_setzero_ps();
  }
  const float* a_k = a.data;
  const float* b_k = panel;
  for (int64_t k = 0; k < b.k_size; ++k) {
    __m256 b_vectors[2 * NP];
#pragma GCC unroll 16
    for (int q = 0; q < 2 * NP; ++q) {
      b_vectors[q] =
          _mm256_loadu_ps(b_k + (q / 2) * b.panel_stride + (q % 2) * 8);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m256 a_ik = _mm256_broadcast_ss(a_k + i * a.row_stride);
#pragma GCC unroll 16
      for (int q = 0; q < 2 * NP; ++q) {
        acc[i][q] = _mm256_fmadd_ps(a_ik, b_vectors[q], acc[i][q]);
      }
    }
    ++a_k;
    b_k += b.k_stride;
  }
  if (width >= NP * kPanel) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
      for (int q = 0; q < 2 * NP; ++q) {
        float* out = c + i * ldc + q * 8;
        _mm256_storeu_ps(out, kAccumulate
                                  ? _mm256_add_ps(_mm256_loadu_ps(out),
                                                  acc[i][q])
                                  : acc[i][q]);
      }
    }
  } else {
    // Partial panel: masked loads and stores keep the accumulators in
    // registers (indexing them with a runtime column would spill them).
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i masks[2 * NP];
#pragma GCC unroll 16
    for (int q = 0; q < 2 * NP; ++q) {
      masks[q] = _mm256_cmpgt_epi32(
          _mm256_set1_epi32(static_cast<int>(width - q * 8)), lanes);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
      for (int q = 0; q < 2 * NP; ++q) {
        float* out = c + i * ldc + q * 8;
        _mm256_maskstore_ps(
            out, masks[q],
            kAccumulate ? _mm256_add_ps(_mm256_maskload_ps(out, masks[q]),
                                        acc[i][q])
                        : acc[i][q]);
      }
    }
  }
}

#else  // No AVX2/FMA: Eigen multiplies each tile, for whatever SIMD the
       // target has.

template <int MR, int NP, bool kAccumulate>
inline void MicroKernel(Rows a, const Panels& b, const float* panel,
                        float* c, int64_t ldc, int64_t width) {
  using Tile = Eigen::Matrix<float, MR, kPanel, Eigen::RowMajor>;
  const Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>> a_tile(
      a.data, MR, b.k_size, Eigen::OuterStride<>(a.row_stride));
  for (int q = 0; q < NP; ++q) {
    const int64_t columns = std::min<int64_t>(width - q * kPanel, kPanel);
    if (columns <= 0) break;
    const Tile product =
        a_tile * Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>(
                     panel + q * b.panel_stride, b.k_size, kPanel,
                     Eigen::OuterStride<>(b.k_stride));
    for (int i = 0; i < MR; ++i) {
      float* out = c + i * ldc + q * kPanel;
      for (int64_t j = 0; j < columns; ++j) {
        out[j] = kAccumulate ? out[j] + product(i, j) : product(i, j);
      }
    }
  }
}

#endif  // defined(__AVX2__) && defined(__FMA__)

// MR rows of c against panels [first, last), NP panels per kernel call so
// that a single row still keeps enough independent FMA chains in flight.
template <int MR, int NP, bool kAccumulate>
void PanelRange(Rows a, const Panels& b, int64_t first, int64_t last,
                float* c, int64_t ldc) {
  int64_t p = first;
  for (; p + NP <= last; p += NP) {
    MicroKernel<MR, NP, kAccumulate>(a, b, b.panel(p), c + p * kPanel, ldc,
                                     b.n_size - p * kPanel);
  }
  for (; p < last; ++p) {
    MicroKernel<MR, 1, kAccumulate>(a, b, b.panel(p), c + p * kPanel, ldc,
                                    b.n_size - p * kPanel);
  }
}

// Below this many rows, one row at a time.
constexpr int64_t kMinGemmRows = 4;

// Rows of a tile: 6 rows x 16 columns is 12 accumulators, which with the
// two panel loads and a broadcast fills AVX2's 16 registers.
constexpr int64_t kTileRows = 6;

// c[rows, N] = a[rows, K] @ B (or +=, kAccumulate).
template <bool kAccumulate>
void Gemm(Rows a, int64_t rows, const Panels& b, float* c, int64_t ldc) {
  if (rows < kMinGemmRows) {
    // Matrix-vector products: one row, four panels at a time.
    for (int64_t r = 0; r < rows; ++r) {
      PanelRange<1, 4, kAccumulate>(a.Offset(r), b, 0, b.panels(),
                                    c + r * ldc, ldc);
    }
    return;
  }
  // Panel-outer, so a panel of B stays in L1 while every row tile uses it.
  for (int64_t p = 0; p < b.panels(); ++p) {
    // Tiles of nearly equal height (32 rows: 6,6,5,5,5,5), not 6s and a
    // thin remainder that would keep too few accumulators busy.
    const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t r = rows * tile / tiles;
      const Rows a_tile = a.Offset(r);
      float* c_tile = c + r * ldc;
      switch (rows * (tile + 1) / tiles - r) {
        case 6:
          PanelRange<6, 1, kAccumulate>(a_tile, b, p, p + 1, c_tile, ldc);
          break;
        case 5:
          PanelRange<5, 1, kAccumulate>(a_tile, b, p, p + 1, c_tile, ldc);
          break;
        case 4:
          PanelRange<4, 1, kAccumulate>(a_tile, b, p, p + 1, c_tile, ldc);
          break;
        case 3:
          PanelRange<3, 1, kAccumulate>(a_tile, b, p, p + 1, c_tile, ldc);
          break;
        case 2:
          PanelRange<2, 1, kAccumulate>(a_tile, b, p, p + 1, c_tile, ldc);
          break;
        default:
          PanelRange<1, 1, kAccumulate>(a_tile, b, p, p + 1, c_tile, ldc);
          break;
      }
    }
  }
}

// c[rows, N] = a[rows, K] @ B (or +=), a row-major with leading dimension
// lda and B packed.
template <bool kAccumulate>
void PackedGemm(const float* a, int64_t lda, int64_t rows,
                const PackedMatrix& b, float* c, int64_t ldc) {
  Gemm<kAccumulate>(Rows{a, lda}, rows, Panels::Of(b), c, ldc);
}

// Packs b [K, N] (row-major) into `out` as panels of kPanel columns, the
// layout of PackedMatrix; `out` holds K floats per column, N rounded up to
// a whole panel.
Panels PackPanels(const float* b, int64_t k_size, int64_t n_size,
                  float* out) {
  const int64_t panels = (n_size + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t width = std::min(kPanel, n_size - p * kPanel);
    float* panel = out + p * k_size * kPanel;
    for (int64_t k = 0; k < k_size; ++k) {
      // The columns past `width` are never stored, whatever they hold.
      std::memcpy(panel + k * kPanel, b + k * n_size + p * kPanel,
                  width * sizeof(float));
    }
  }
  return {out, k_size * kPanel, kPanel, k_size, n_size};
}

#if defined(__AVX2__) && defined(__FMA__)
// out[c * out_stride + r] = rows[r][c0 + c] for an 8 x 8 block, in
// registers (the usual unpack, shuffle, permute sequence).
inline void Transpose8x8(const float* const* rows, int64_t c0, float* out,
                         int64_t out_stride) {
  __m256 r[8], t[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(rows[i] + c0);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[i]: columns (i % 4) and (i % 4) + 4 of rows 0-3 (i < 4) or 4-7.
#pragma GCC unroll 2
  for (int half = 0; half < 2; ++half) {
    const __m256* u = t + 4 * half;
    r[4 * half + 0] = _mm256_shuffle_ps(u[0], u[2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * half + 1] = _mm256_shuffle_ps(u[0], u[2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * half + 2] = _mm256_shuffle_ps(u[1], u[3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * half + 3] = _mm256_shuffle_ps(u[1], u[3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * out_stride,
                     _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * out_stride,
                     _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
#endif

// out [cols, rows] = the matrix whose row r is rows_at[r][0, cols),
// transposed, in 8 x 8 blocks that stay in cache.
void TransposeRows(const std::vector<const float*>& rows_at, int64_t cols,
                   float* out) {
  constexpr int64_t kBlock = 8;
  const int64_t rows = rows_at.size();
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t c1 = std::min(cols, c0 + kBlock);
#if defined(__AVX2__) && defined(__FMA__)
      if (r1 - r0 == kBlock && c1 - c0 == kBlock) {
        Transpose8x8(rows_at.data() + r0, c0, out + c0 * rows + r0, rows);
        continue;
      }
#endif
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) out[c * rows + r] = rows_at[r][c];
      }
    }
  }
}

// The number of row blocks ForEachRowBlock splits a batch into.
int64_t RowBlocks(OpKernelContext* context, int64_t batch) {
  const auto* threads = context->device()->tensorflow_cpu_worker_threads();
  return std::max<int64_t>(1, std::min<int64_t>(threads->num_threads, batch));
}

// Runs fn(block, row_begin, row_end) on one block of batch rows per worker
// thread.
template <typename Fn>
void ForEachRowBlock(OpKernelContext* context, int64_t batch, const Fn& fn) {
  const auto* threads = context->device()->tensorflow_cpu_worker_threads();
  const int64_t blocks = RowBlocks(context, batch);
  auto run_blocks = [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      fn(block, batch * block / blocks, batch * (block + 1) / blocks);
    }
  };
  if (blocks == 1) {
    run_blocks(0, 1);
  } else {
    threads->workers->ParallelFor(blocks, run_blocks);
  }
}

int64_t TimeIndex(int64_t step, int64_t timesteps, bool go_backwards) {
  return go_backwards ? timesteps - 1 - step : step;
}

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

Status SequenceShape(InferenceContext* c) {
  ShapeHandle x, h0;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &h0));
  bool return_sequences, save;
  TF_RETURN_IF_ERROR(c->GetAttr("return_sequences", &return_sequences));
  TF_RETURN_IF_ERROR(c->GetAttr("save_for_backward", &save));
  DimensionHandle batch = c->Dim(x, 0);
  DimensionHandle time = c->Dim(x, 1);
  DimensionHandle units = c->Dim(h0, 1);
  DimensionHandle gates;
  TF_RETURN_IF_ERROR(c->Multiply(units, 4, &gates));
  DimensionHandle saved_time = save ? time : c->MakeDim(0);
  c->set_output(0, c->MakeShape({batch, return_sequences ? time
                                                         : c->MakeDim(1),
                                 units}));
  c->set_output(1, c->MakeShape({batch, units}));
  c->set_output(2, c->MakeShape({batch, units}));
  c->set_output(3, c->MakeShape({batch, saved_time, units}));
  c->set_output(4, c->MakeShape({batch, saved_time, units}));
  c->set_output(5, c->MakeShape({batch, saved_time, gates}));
  return Status();
}

REGISTER_OP("LstmKerasSequence")
    .Input("x: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("recurrent_kernel: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("mask: float")
    .Input("recurrent_mask: float")
    .Output("outputs: float")
    .Output("h_last: float")
    .Output("c_last: float")
    .Output("h_prev_seq: float")
    .Output("c_seq: float")
    .Output("gates: float")
    .Attr("go_backwards: bool = false")
    .Attr("zero_output_for_mask: bool = false")
    .Attr("return_sequences: bool = true")
    .Attr("save_for_backward: bool = true")
    .SetShapeFn(SequenceShape);

class LstmKerasSequenceOp : public OpKernel {
 public:
  explicit LstmKerasSequenceOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("go_backwards", &go_backwards_));
    OP_REQUIRES_OK(context, context->GetAttr("zero_output_for_mask",
                                             &zero_output_for_mask_));
    OP_REQUIRES_OK(context,
                   context->GetAttr("return_sequences", &return_sequences_));
    OP_REQUIRES_OK(context, context->GetAttr("save_for_backward", &save_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& kernel = context->input(1);
    const Tensor& bias = context->input(2);
    const Tensor& recurrent_kernel = context->input(3);
    const Tensor& h0 = context->input(4);
    const Tensor& c0 = context->input(5);
    const Tensor& mask = context->input(6);
    const Tensor& recurrent_mask = context->input(7);
    OP_REQUIRES(context, x.dims() == 3,
                tensorflow::errors::InvalidArgument("x must be rank 3"));
    const int64_t batch = x.dim_size(0);
    const int64_t time = x.dim_size(1);
    const int64_t input_dim = x.dim_size(2);
    const int64_t units = recurrent_kernel.dim_size(0);
    const int64_t gates = 4 * units;
    OP_REQUIRES(
        context,
        kernel.dims() == 2 && kernel.dim_size(0) == input_dim &&
            kernel.dim_size(1) == gates && bias.NumElements() == gates &&
            recurrent_kernel.dims() == 2 &&
            recurrent_kernel.dim_size(1) == gates &&
            h0.NumElements() == batch * units &&
            c0.NumElements() == batch * units,
        tensorflow::errors::InvalidArgument("inconsistent LSTM shapes"));
    const bool has_mask = mask.NumElements() > 0;
    OP_REQUIRES(context, !has_mask || mask.NumElements() == batch * time,
                tensorflow::errors::InvalidArgument(
                    "mask must be [batch, timesteps] or empty"));
    const bool has_dropout = recurrent_mask.NumElements() > 0;
    OP_REQUIRES(context,
                !has_dropout || recurrent_mask.NumElements() == batch * units,
                tensorflow::errors::InvalidArgument(
                    "recurrent_mask must be [batch, units] or empty"));

    const int64_t out_time = return_sequences_ ? time : 1;
    const int64_t saved_time = save_ ? time : 0;
    Tensor *outputs, *h_last, *c_last, *h_prev_seq, *c_seq, *gate_seq;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({batch, out_time, units}), &outputs));
    OP_REQUIRES_OK(context, context->allocate_output(
                                1, TensorShape({batch, units}), &h_last));
    OP_REQUIRES_OK(context, context->allocate_output(
                                2, TensorShape({batch, units}), &c_last));
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       3, TensorShape({batch, saved_time, units}), &h_prev_seq));
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       4, TensorShape({batch, saved_time, units}), &c_seq));
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       5, TensorShape({batch, saved_time, gates}), &gate_seq));
    if (batch == 0) return;

    const float* x_data = x.flat<float>().data();
    const float* mask_data = has_mask ? mask.flat<float>().data() : nullptr;
    const float* dropout_data =
        has_dropout ? recurrent_mask.flat<float>().data() : nullptr;
    const float* h0_data = h0.flat<float>().data();
    const float* c0_data = c0.flat<float>().data();
    float* out_data = outputs->flat<float>().data();
    float* h_prev_data = save_ ? h_prev_seq->flat<float>().data() : nullptr;
    float* c_seq_data = save_ ? c_seq->flat<float>().data() : nullptr;
    float* gate_data = save_ ? gate_seq->flat<float>().data() : nullptr;
    const PackedMatrix W(kernel.flat<float>().data(), input_dim, gates,
                         gates, 1);
    const PackedMatrix U(recurrent_kernel.flat<float>().data(), units, gates,
                         gates, 1);
    const float* b = bias.flat<float>().data();
    float* h_last_data = h_last->flat<float>().data();
    float* c_last_data = c_last->flat<float>().data();
    const bool go_backwards = go_backwards_;
    const bool zero_output = zero_output_for_mask_;
    const bool return_sequences = return_sequences_;
    // Consecutive steps of a row are consecutive rows of x, walked
    // backwards when go_backwards: the projection reads x in place.
    const int64_t x_step_stride = go_backwards ? -input_dim : input_dim;

    ForEachRowBlock(context, batch, [&](int64_t, int64_t row_begin,
                                        int64_t row_end) {
      const int64_t rows = row_end - row_begin;
      RowMatrix h(rows, units), c(rows, units);
      // With recurrent dropout the products read h_prev * mask (the same
      // mask at every step), and so does dU: that is what is saved.
      RowMatrix h_dropped(has_dropout ? rows : 0, units);
      const Eigen::Map<const RowMatrix> dropout_mask(
          has_dropout ? dropout_data + row_begin * units : nullptr,
          has_dropout ? rows : 0, units);
      // The previous output of each row (zeros before its first real step).
      RowMatrix output_prev = RowMatrix::Zero(rows, units);
      // Where the gates of (row r, step) live: when saving, straight in the
      // saved gates tensor, so they are never copied; otherwise in a buffer
      // of kChunk steps per row, which keeps memory flat in T.
      std::vector<float> chunk_buffer(save_ ? 0 : rows * kChunk * gates);
      const int64_t z_row_stride = save_ ? time * gates : kChunk * gates;
      auto z_at = [&](int64_t r, int64_t step) {
        return save_ ? gate_data + ((row_begin + r) * time + step) * gates
                     : chunk_buffer.data() + r * z_row_stride +
                           (step % kChunk) * gates;
      };
      for (int64_t r = 0; r < rows; ++r) {
        h.row(r) = Eigen::Map<const Eigen::RowVectorXf>(
            h0_data + (row_begin + r) * units, units);
        c.row(r) = Eigen::Map<const Eigen::RowVectorXf>(
            c0_data + (row_begin + r) * units, units);
      }
      for (int64_t chunk_begin = 0; chunk_begin < time;
           chunk_begin += kChunk) {
        const int64_t steps = std::min(kChunk, time - chunk_begin);
        // z = x_t W for the chunk's steps, one row at a time (the bias is
        // added with the activations).
        for (int64_t r = 0; r < rows; ++r) {
          float* z = z_at(r, chunk_begin);
          const int64_t t = TimeIndex(chunk_begin, time, go_backwards);
          PackedGemm<false>(
              x_data + ((row_begin + r) * time + t) * input_dim,
              x_step_stride, steps, W, z, gates);
        }
        for (int64_t j = 0; j < steps; ++j) {
          const int64_t step = chunk_begin + j;
          const int64_t t = TimeIndex(step, time, go_backwards);
          // z += h_prev U for every row of the block at once.
          if (has_dropout) h_dropped = h.cwiseProduct(dropout_mask);
          const RowMatrix& h_operand = has_dropout ? h_dropped : h;
          PackedGemm<true>(h_operand.data(), units, rows, U, z_at(0, step),
                           z_row_stride);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t row = row_begin + r;
            float* h_row = h.row(r).data();
            float* c_row = c.row(r).data();
            float* output_row = output_prev.row(r).data();
            if (save_) {
              // h_prev, the left operand of dU = h_prev^T dz.
              std::copy_n(h_operand.row(r).data(), units,
                          h_prev_data + (row * time + step) * units);
            }
            const bool real = !has_mask || mask_data[row * time + t] > 0.5f;
            GateStep(z_at(r, step), b, units, real, zero_output, h_row,
                     c_row, output_row);
            if (return_sequences || step == time - 1) {
              const int64_t out_step = return_sequences ? step : 0;
              std::copy_n(output_row, units,
                          out_data + (row * out_time + out_step) * units);
            }
            if (save_) {
              std::copy_n(c_row, units,
                          c_seq_data + (row * time + step) * units);
            }
          }
        }
      }
      std::copy_n(h.data(), rows * units, h_last_data + row_begin * units);
      std::copy_n(c.data(), rows * units, c_last_data + row_begin * units);
    });
  }

 private:
  bool go_backwards_;
  bool zero_output_for_mask_;
  bool return_sequences_;
  bool save_;
};

REGISTER_KERNEL_BUILDER(Name("LstmKerasSequence").Device(DEVICE_CPU),
                        LstmKerasSequenceOp);

REGISTER_OP("LstmKerasSequenceGrad")
    .Input("x: float")
    .Input("kernel: float")
    .Input("recurrent_kernel: float")
    .Input("c0: float")
    .Input("mask: float")
    .Input("recurrent_mask: float")
    .Input("h_prev_seq: float")
    .Input("c_seq: float")
    .Input("gates: float")
    .Input("d_outputs: float")
    .Input("d_h_last: float")
    .Input("d_c_last: float")
    .Output("d_x: float")
    .Output("d_kernel: float")
    .Output("d_recurrent_kernel: float")
    .Output("d_bias: float")
    .Output("d_h0: float")
    .Output("d_c0: float")
    .Attr("go_backwards: bool = false")
    .Attr("zero_output_for_mask: bool = false")
    .Attr("compute_d_x: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      bool compute_d_x;
      TF_RETURN_IF_ERROR(c->GetAttr("compute_d_x", &compute_d_x));
      c->set_output(0, compute_d_x ? c->input(0) : c->Vector(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      DimensionHandle gates;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(c->input(3), 1), 4, &gates));
      c->set_output(3, c->Vector(gates));
      c->set_output(4, c->input(3));
      c->set_output(5, c->input(3));
      return Status();
    });

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

// Rows of dz (one per row and step) gathered for each weight gradient
// product: K = 512 keeps a packed 16-column panel of dz (32 KiB) in L1.
constexpr int64_t kWeightGradSamples = 512;

class LstmKerasSequenceGradOp : public OpKernel {
 public:
  explicit LstmKerasSequenceGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("go_backwards", &go_backwards_));
    OP_REQUIRES_OK(context, context->GetAttr("zero_output_for_mask",
                                             &zero_output_for_mask_));
    OP_REQUIRES_OK(context, context->GetAttr("compute_d_x", &compute_d_x_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& kernel = context->input(1);
    const Tensor& recurrent_kernel = context->input(2);
    const Tensor& c0 = context->input(3);
    const Tensor& mask = context->input(4);
    const Tensor& recurrent_mask = context->input(5);
    const Tensor& h_prev_seq = context->input(6);
    const Tensor& c_seq = context->input(7);
    const Tensor& gate_seq = context->input(8);
    const Tensor& d_outputs = context->input(9);
    const Tensor& d_h_last = context->input(10);
    const Tensor& d_c_last = context->input(11);
    OP_REQUIRES(context,
                x.dims() == 3 && gate_seq.dims() == 3 && c_seq.dims() == 3 &&
                    h_prev_seq.dims() == 3 && kernel.dims() == 2 &&
                    recurrent_kernel.dims() == 2,
                tensorflow::errors::InvalidArgument(
                    "x, the weights and the saved tensors must be rank 3, 2 "
                    "and 3"));
    const int64_t batch = gate_seq.dim_size(0);
    const int64_t time = gate_seq.dim_size(1);
    const int64_t input_dim = x.dim_size(2);
    const int64_t units = recurrent_kernel.dim_size(0);
    const int64_t gates = 4 * units;
    const int64_t out_time = d_outputs.dim_size(1);
    OP_REQUIRES(
        context,
        x.dim_size(0) == batch && x.dim_size(1) == time &&
            kernel.dim_size(0) == input_dim && kernel.dim_size(1) == gates &&
            recurrent_kernel.dim_size(1) == gates &&
            gate_seq.dim_size(2) == gates && c_seq.dim_size(1) == time &&
            h_prev_seq.dim_size(1) == time && d_outputs.dims() == 3 &&
            (out_time == time || out_time == 1) &&
            c0.NumElements() == batch * units &&
            d_h_last.NumElements() == batch * units &&
            d_c_last.NumElements() == batch * units,
        tensorflow::errors::InvalidArgument("inconsistent LSTM shapes"));
    const bool has_mask = mask.NumElements() > 0;
    OP_REQUIRES(context, !has_mask || mask.NumElements() == batch * time,
                tensorflow::errors::InvalidArgument(
                    "mask must be [batch, timesteps] or empty"));
    const bool has_dropout = recurrent_mask.NumElements() > 0;
    OP_REQUIRES(context,
                !has_dropout || recurrent_mask.NumElements() == batch * units,
                tensorflow::errors::InvalidArgument(
                    "recurrent_mask must be [batch, units] or empty"));

    Tensor *d_x, *d_kernel, *d_recurrent_kernel, *d_bias, *d_h0, *d_c0;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, compute_d_x_ ? x.shape() : TensorShape({0}), &d_x));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, kernel.shape(), &d_kernel));
    OP_REQUIRES_OK(context, context->allocate_output(
                                2, recurrent_kernel.shape(),
                                &d_recurrent_kernel));
    OP_REQUIRES_OK(context, context->allocate_output(
                                3, TensorShape({gates}), &d_bias));
    OP_REQUIRES_OK(context, context->allocate_output(4, c0.shape(), &d_h0));
    OP_REQUIRES_OK(context, context->allocate_output(5, c0.shape(), &d_c0));
    d_kernel->flat<float>().setZero();
    d_recurrent_kernel->flat<float>().setZero();
    d_bias->flat<float>().setZero();
    if (batch == 0) return;

    // U^T [4H, H] and W^T [4H, D]: element (k, n) is U[n, k] / W[n, k].
    const PackedMatrix U_t(recurrent_kernel.flat<float>().data(), gates, units,
                           1, gates);
    const bool compute_d_x = compute_d_x_ && input_dim > 0;
    const PackedMatrix W_t(kernel.flat<float>().data(),
                           compute_d_x ? gates : 0, input_dim, 1, gates);
    const float* x_data = x.flat<float>().data();
    const float* c0_data = c0.flat<float>().data();
    const float* mask_data = has_mask ? mask.flat<float>().data() : nullptr;
    const float* dropout_data =
        has_dropout ? recurrent_mask.flat<float>().data() : nullptr;
    const float* h_prev_data = h_prev_seq.flat<float>().data();
    const float* c_seq_data = c_seq.flat<float>().data();
    const float* gate_data = gate_seq.flat<float>().data();
    const float* d_out_data = d_outputs.flat<float>().data();
    const float* d_h_last_data = d_h_last.flat<float>().data();
    const float* d_c_last_data = d_c_last.flat<float>().data();
    float* d_x_data = compute_d_x ? d_x->flat<float>().data() : nullptr;
    float* d_h0_data = d_h0->flat<float>().data();
    float* d_c0_data = d_c0->flat<float>().data();
    const bool go_backwards = go_backwards_;
    const bool zero_output = zero_output_for_mask_;

    // Each block sums its own rows' weight gradients; the blocks' sums are
    // added after the loop. Rows: W's D, then U's H, then the bias.
    const int64_t blocks = RowBlocks(context, batch);
    const int64_t weight_rows = input_dim + units + 1;
    std::vector<float> block_sums(blocks * weight_rows * gates, 0.0f);

    ForEachRowBlock(context, batch, [&](int64_t block, int64_t row_begin,
                                        int64_t row_end) {
      const int64_t rows = row_end - row_begin;
      float* d_kernel_sum = block_sums.data() + block * weight_rows * gates;
      float* d_recurrent_sum = d_kernel_sum + input_dim * gates;
      ArrayMap d_bias_sum(d_recurrent_sum + units * gates, gates);
      // dW = x^T dz and dU = h_prev^T dz over the block's (row, step)
      // samples, kWeightGradSamples at a time: each step writes its dz rows
      // into a row-major buffer and notes where its x and h_prev rows are;
      // each product then packs dz into panels and transposes x and h_prev,
      // so that it runs at the speed of the recurrent products.
      const int64_t capacity = std::max(kWeightGradSamples, rows);
      std::vector<float> dz_samples(capacity * gates);
      std::vector<const float*> x_rows, h_prev_rows;
      x_rows.reserve(capacity);
      h_prev_rows.reserve(capacity);
      std::vector<float> dz_panels(
          capacity * ((gates + kPanel - 1) / kPanel) * kPanel);
      std::vector<float> x_transposed(capacity * input_dim);
      std::vector<float> h_prev_transposed(capacity * units);
      int64_t samples = 0;
      auto flush_samples = [&]() {
        if (samples == 0) return;
        const Panels dz_packed = PackPanels(dz_samples.data(), samples,
                                            gates, dz_panels.data());
        TransposeRows(x_rows, input_dim, x_transposed.data());
        TransposeRows(h_prev_rows, units, h_prev_transposed.data());
        x_rows.clear();
        h_prev_rows.clear();
        Gemm<true>(Rows{x_transposed.data(), samples}, input_dim, dz_packed,
                   d_kernel_sum, gates);
        Gemm<true>(Rows{h_prev_transposed.data(), samples}, units, dz_packed,
                   d_recurrent_sum, gates);
        samples = 0;
      };

      RowMatrix delta_h(rows, units), delta_c(rows, units);
      RowMatrix delta_h_in(rows, units);
      // Gradient reaching an output that later masked steps copied forward.
      RowMatrix carried = RowMatrix::Zero(rows, units);
      Eigen::ArrayXf delta_out(units), tanh_c(units);
      std::vector<bool> real(rows);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = row_begin + r;
        delta_h.row(r) = Eigen::Map<const Eigen::RowVectorXf>(
            d_h_last_data + row * units, units);
        delta_c.row(r) = Eigen::Map<const Eigen::RowVectorXf>(
            d_c_last_data + row * units, units);
      }
      for (int64_t step = time - 1; step >= 0; --step) {
        const int64_t t = TimeIndex(step, time, go_backwards);
        if (samples + rows > capacity) flush_samples();
        // This step's dz, one row per batch row (zeros where masked).
        float* dz = dz_samples.data() + samples * gates;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = row_begin + r;
          const int64_t offset = row * time + step;
          x_rows.push_back(x_data + (row * time + t) * input_dim);
          h_prev_rows.push_back(h_prev_data + offset * units);
          ArrayMap carried_row(carried.row(r).data(), units);
          delta_out = carried_row;
          if (out_time == time || step == time - 1) {
            const int64_t out_step = out_time == time ? step : 0;
            delta_out += ConstArrayMap(
                d_out_data + (row * out_time + out_step) * units, units);
          }
          real[r] = !has_mask || mask_data[row * time + t] > 0.5f;
          ArrayMap dz_row(dz + r * gates, gates);
          if (!real[r]) {
            dz_row.setZero();
            if (zero_output) {
              carried_row.setZero();
            } else {
              carried_row = delta_out;
            }
            continue;
          }
          carried_row.setZero();
          const float* g = gate_data + offset * gates;
          const float* c_prev = step > 0 ? c_seq_data + (offset - 1) * units
                                         : c0_data + row * units;
          tanh_c = ConstArrayMap(c_seq_data + offset * units, units).tanh();
          GateGradients(units, g, c_prev, tanh_c.data(), delta_out.data(),
                        delta_h.row(r).data(), delta_c.row(r).data(),
                        dz_row.data(), d_bias_sum.data());
        }
        PackedGemm<false>(dz, gates, rows, U_t, delta_h_in.data(), units);
        if (compute_d_x) {
          // dx_t = dz W^T, written to each row's timestep t.
          PackedGemm<false>(dz, gates, rows, W_t,
                            d_x_data + (row_begin * time + t) * input_dim,
                            time * input_dim);
        }
        for (int64_t r = 0; r < rows; ++r) {
          // A masked step forwarded h_prev untouched: its gradient passes.
          // A real one read h_prev * mask under recurrent dropout.
          if (!real[r]) continue;
          if (has_dropout) {
            delta_h.row(r) = delta_h_in.row(r).cwiseProduct(
                Eigen::Map<const Eigen::RowVectorXf>(
                    dropout_data + (row_begin + r) * units, units));
          } else {
            delta_h.row(r) = delta_h_in.row(r);
          }
        }
        samples += rows;
      }
      flush_samples();
      std::copy_n(delta_h.data(), rows * units, d_h0_data + row_begin * units);
      std::copy_n(delta_c.data(), rows * units, d_c0_data + row_begin * units);
    });
    // Add up the blocks' sums, in block order so results do not depend on
    // thread timing.
    float* weight_grads[3] = {d_kernel->flat<float>().data(),
                              d_recurrent_kernel->flat<float>().data(),
                              d_bias->flat<float>().data()};
    const int64_t sizes[3] = {input_dim * gates, units * gates, gates};
    for (int64_t block = 0; block < blocks; ++block) {
      const float* sums = block_sums.data() + block * weight_rows * gates;
      for (int part = 0; part < 3; ++part) {
        ArrayMap(weight_grads[part], sizes[part]) +=
            ConstArrayMap(sums, sizes[part]);
        sums += sizes[part];
      }
    }
  }

 private:
  bool go_backwards_;
  bool zero_output_for_mask_;
  bool compute_d_x_;
};

REGISTER_KERNEL_BUILDER(Name("LstmKerasSequenceGrad").Device(DEVICE_CPU),
                        LstmKerasSequenceGradOp);

}  // namespace lstm_keras
