// The LSTM recurrence as two TensorFlow CPU ops, for lstm_keras's fast path.
//
// LstmKerasSequence runs the whole sequence: it projects the inputs
// (x_t @ W + b) a chunk of timesteps at a time, then for each step multiplies
// h_prev @ U and applies the gates, exactly as lstm_keras.LSTMCell does
// (gate order input, forget, candidate, output; sigmoid and tanh). Masked
// steps keep h and c and output zeros (zero_output_for_mask) or the previous
// output, as dispatch.generic_lstm_sequence does. With save_for_backward it
// also returns the activated gates and the cell states, which
// LstmKerasSequenceGrad needs; without, its memory does not grow with T
// beyond the outputs asked for.
//
// LstmKerasSequenceGrad runs backpropagation through time and returns the
// gradient of the gates' pre-activations dz (processing order), and the
// gradients of h_0 and c_0. The weight gradients are big matmuls that
// TensorFlow does outside (dU = h_prev^T dz, dW = x^T dz, db = sum dz).
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
  const float* panel(int64_t p) const {
    return data_.data() + p * k_size_ * kPanel;
  }

 private:
  int64_t k_size_, n_size_, panels_;
  std::vector<float> data_;
};

#if defined(__AVX2__) && defined(__FMA__)

// c[MR, NP panels] (+)= a[MR, K] @ the NP panels starting at `panel`, with
// the products in registers: MR * NP * 2 accumulators of 8 floats. Only the
// first `width` columns of c are written (the last panel may be partial).
template <int MR, int NP, bool kAccumulate>
inline void MicroKernel(const float* a, int64_t lda, const float* panel,
                        int64_t k_size, float* c, int64_t ldc,
                        int64_t width) {
  __m256 acc[MR][2 * NP];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int q = 0; q < 2 * NP; ++q) acc[i][q] = _mm256_setzero_ps();
  }
  const int64_t panel_size = k_size * kPanel;
  for (int64_t k = 0; k < k_size; ++k) {
    __m256 b[2 * NP];
#pragma GCC unroll 16
    for (int q = 0; q < 2 * NP; ++q) {
      b[q] = _mm256_loadu_ps(panel + (q / 2) * panel_size + k * kPanel +
                             (q % 2) * 8);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m256 a_ik = _mm256_broadcast_ss(a + i * lda + k);
#pragma GCC unroll 16
      for (int q = 0; q < 2 * NP; ++q) {
        acc[i][q] = _mm256_fmadd_ps(a_ik, b[q], acc[i][q]);
      }
    }
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
inline void MicroKernel(const float* a, int64_t lda, const float* panel,
                        int64_t k_size, float* c, int64_t ldc,
                        int64_t width) {
  using Tile = Eigen::Matrix<float, MR, kPanel, Eigen::RowMajor>;
  const Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>> a_tile(
      a, MR, k_size, Eigen::OuterStride<>(lda));
  for (int q = 0; q < NP; ++q) {
    const int64_t columns = std::min<int64_t>(width - q * kPanel, kPanel);
    if (columns <= 0) break;
    const Tile product =
        a_tile * Eigen::Map<const RowMatrix>(panel + q * k_size * kPanel,
                                             k_size, kPanel);
    for (int i = 0; i < MR; ++i) {
      float* out = c + i * ldc + q * kPanel;
      for (int64_t j = 0; j < columns; ++j) {
        out[j] = kAccumulate ? out[j] + product(i, j) : product(i, j);
      }
    }
  }
}

#endif  // defined(__AVX2__) && defined(__FMA__)

// One row of c against panels [first, last), NP panels per kernel call so
// that a single row still keeps enough independent FMA chains in flight.
template <int MR, int NP, bool kAccumulate>
void PanelRange(const float* a, int64_t lda, const PackedMatrix& b,
                int64_t first, int64_t last, float* c, int64_t ldc) {
  int64_t p = first;
  for (; p + NP <= last; p += NP) {
    MicroKernel<MR, NP, kAccumulate>(a, lda, b.panel(p), b.k_size(),
                                     c + p * kPanel, ldc,
                                     b.n_size() - p * kPanel);
  }
  for (; p < last; ++p) {
    MicroKernel<MR, 1, kAccumulate>(a, lda, b.panel(p), b.k_size(),
                                    c + p * kPanel, ldc,
                                    b.n_size() - p * kPanel);
  }
}

// Below this many rows, one row at a time.
constexpr int64_t kMinGemmRows = 4;

// Rows of a tile: 6 rows x 16 columns is 12 accumulators, which with the
// two panel loads and a broadcast fills AVX2's 16 registers.
constexpr int64_t kTileRows = 6;

// c[rows, N] = a[rows, K] @ B (or +=, kAccumulate).
template <bool kAccumulate>
void PackedGemm(const float* a, int64_t lda, int64_t rows,
                const PackedMatrix& b, float* c, int64_t ldc) {
  if (rows < kMinGemmRows) {
    // Matrix-vector products: one row, four panels at a time.
    for (int64_t r = 0; r < rows; ++r) {
      PanelRange<1, 4, kAccumulate>(a + r * lda, lda, b, 0, b.panels(),
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
      const float* a_tile = a + r * lda;
      float* c_tile = c + r * ldc;
      switch (rows * (tile + 1) / tiles - r) {
        case 6:
          PanelRange<6, 1, kAccumulate>(a_tile, lda, b, p, p + 1, c_tile, ldc);
          break;
        case 5:
          PanelRange<5, 1, kAccumulate>(a_tile, lda, b, p, p + 1, c_tile, ldc);
          break;
        case 4:
          PanelRange<4, 1, kAccumulate>(a_tile, lda, b, p, p + 1, c_tile, ldc);
          break;
        case 3:
          PanelRange<3, 1, kAccumulate>(a_tile, lda, b, p, p + 1, c_tile, ldc);
          break;
        case 2:
          PanelRange<2, 1, kAccumulate>(a_tile, lda, b, p, p + 1, c_tile, ldc);
          break;
        default:
          PanelRange<1, 1, kAccumulate>(a_tile, lda, b, p, p + 1, c_tile, ldc);
          break;
      }
    }
  }
}

// z += h @ U, for the rows of h (U packed).
template <typename Z>
void AddRecurrent(Z&& z, const RowMatrix& h, const PackedMatrix& U) {
  PackedGemm<true>(h.data(), h.cols(), h.rows(), U, z.data(),
                   z.outerStride());
}

// delta_h = dz @ U^T, for the rows of dz (U^T packed).
void BackRecurrent(RowMatrix& delta_h, const RowMatrix& dz,
                   const PackedMatrix& U_t) {
  PackedGemm<false>(dz.data(), dz.cols(), dz.rows(), U_t, delta_h.data(),
                    delta_h.cols());
}

// Runs fn(row_begin, row_end) on one block of batch rows per worker thread.
template <typename Fn>
void ForEachRowBlock(OpKernelContext* context, int64_t batch, const Fn& fn) {
  const auto* threads = context->device()->tensorflow_cpu_worker_threads();
  const int64_t blocks =
      std::max<int64_t>(1, std::min<int64_t>(threads->num_threads, batch));
  auto run_blocks = [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      fn(batch * block / blocks, batch * (block + 1) / blocks);
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
    .Output("outputs: float")
    .Output("h_last: float")
    .Output("c_last: float")
    .Output("h_seq: float")
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

    const int64_t out_time = return_sequences_ ? time : 1;
    const int64_t saved_time = save_ ? time : 0;
    Tensor *outputs, *h_last, *c_last, *h_seq, *c_seq, *gate_seq;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({batch, out_time, units}), &outputs));
    OP_REQUIRES_OK(context, context->allocate_output(
                                1, TensorShape({batch, units}), &h_last));
    OP_REQUIRES_OK(context, context->allocate_output(
                                2, TensorShape({batch, units}), &c_last));
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       3, TensorShape({batch, saved_time, units}), &h_seq));
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       4, TensorShape({batch, saved_time, units}), &c_seq));
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       5, TensorShape({batch, saved_time, gates}), &gate_seq));
    if (batch == 0) return;

    const float* x_data = x.flat<float>().data();
    const float* mask_data = has_mask ? mask.flat<float>().data() : nullptr;
    const float* h0_data = h0.flat<float>().data();
    const float* c0_data = c0.flat<float>().data();
    float* out_data = outputs->flat<float>().data();
    float* h_seq_data = save_ ? h_seq->flat<float>().data() : nullptr;
    float* c_seq_data = save_ ? c_seq->flat<float>().data() : nullptr;
    float* gate_data = save_ ? gate_seq->flat<float>().data() : nullptr;
    const PackedMatrix W(kernel.flat<float>().data(), input_dim, gates,
                         gates, 1);
    const PackedMatrix U(recurrent_kernel.flat<float>().data(), units, gates,
                         gates, 1);
    Eigen::Map<const Eigen::RowVectorXf> b(bias.flat<float>().data(), gates);
    float* h_last_data = h_last->flat<float>().data();
    float* c_last_data = c_last->flat<float>().data();
    const bool go_backwards = go_backwards_;
    const bool zero_output = zero_output_for_mask_;
    const bool return_sequences = return_sequences_;

    ForEachRowBlock(context, batch, [&](int64_t row_begin, int64_t row_end) {
      const int64_t rows = row_end - row_begin;
      RowMatrix h(rows, units), c(rows, units), h_new(rows, units);
      // The previous output of each row (zeros before its first real step).
      RowMatrix output_prev = RowMatrix::Zero(rows, units);
      RowMatrix x_chunk(kChunk * rows, input_dim);
      RowMatrix z_chunk(kChunk * rows, gates);
      for (int64_t r = 0; r < rows; ++r) {
        h.row(r) = Eigen::Map<const Eigen::RowVectorXf>(
            h0_data + (row_begin + r) * units, units);
        c.row(r) = Eigen::Map<const Eigen::RowVectorXf>(
            c0_data + (row_begin + r) * units, units);
      }
      for (int64_t chunk_begin = 0; chunk_begin < time;
           chunk_begin += kChunk) {
        const int64_t steps = std::min(kChunk, time - chunk_begin);
        // Time-major within the chunk, so each step's rows are contiguous.
        for (int64_t j = 0; j < steps; ++j) {
          const int64_t t = TimeIndex(chunk_begin + j, time, go_backwards);
          for (int64_t r = 0; r < rows; ++r) {
            x_chunk.row(j * rows + r) = Eigen::Map<const Eigen::RowVectorXf>(
                x_data + ((row_begin + r) * time + t) * input_dim, input_dim);
          }
        }
        z_chunk.topRows(steps * rows).rowwise() = b;
        PackedGemm<true>(x_chunk.data(), input_dim, steps * rows, W,
                         z_chunk.data(), gates);
        for (int64_t j = 0; j < steps; ++j) {
          const int64_t step = chunk_begin + j;
          const int64_t t = TimeIndex(step, time, go_backwards);
          auto z = z_chunk.middleRows(j * rows, rows);
          AddRecurrent(z, h, U);
          z.leftCols(2 * units) = z.leftCols(2 * units).array().logistic();
          z.middleCols(2 * units, units) =
              z.middleCols(2 * units, units).array().tanh();
          z.rightCols(units) = z.rightCols(units).array().logistic();
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t row = row_begin + r;
            const float* g = z.row(r).data();
            ConstArrayMap input_gate(g, units), forget_gate(g + units, units),
                candidate(g + 2 * units, units),
                output_gate(g + 3 * units, units);
            ArrayMap c_row(c.row(r).data(), units);
            ArrayMap h_row(h.row(r).data(), units);
            ArrayMap output_row(output_prev.row(r).data(), units);
            const bool real = !has_mask || mask_data[row * time + t] > 0.5f;
            if (real) {
              c_row = forget_gate * c_row + input_gate * candidate;
              h_row = output_gate * c_row.tanh();
              output_row = h_row;
            } else if (zero_output) {
              output_row.setZero();
            }
            if (return_sequences || step == time - 1) {
              const int64_t out_step = return_sequences ? step : 0;
              std::copy_n(output_row.data(), units,
                          out_data + (row * out_time + out_step) * units);
            }
            if (save_) {
              const int64_t offset = row * time + step;
              std::copy_n(h_row.data(), units, h_seq_data + offset * units);
              std::copy_n(c_row.data(), units, c_seq_data + offset * units);
              std::copy_n(g, gates, gate_data + offset * gates);
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
    .Input("recurrent_kernel: float")
    .Input("c0: float")
    .Input("mask: float")
    .Input("c_seq: float")
    .Input("gates: float")
    .Input("d_outputs: float")
    .Input("d_h_last: float")
    .Input("d_c_last: float")
    .Output("d_z: float")
    .Output("d_h0: float")
    .Output("d_c0: float")
    .Attr("go_backwards: bool = false")
    .Attr("zero_output_for_mask: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(4));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(1));
      return Status();
    });

class LstmKerasSequenceGradOp : public OpKernel {
 public:
  explicit LstmKerasSequenceGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("go_backwards", &go_backwards_));
    OP_REQUIRES_OK(context, context->GetAttr("zero_output_for_mask",
                                             &zero_output_for_mask_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& recurrent_kernel = context->input(0);
    const Tensor& c0 = context->input(1);
    const Tensor& mask = context->input(2);
    const Tensor& c_seq = context->input(3);
    const Tensor& gate_seq = context->input(4);
    const Tensor& d_outputs = context->input(5);
    const Tensor& d_h_last = context->input(6);
    const Tensor& d_c_last = context->input(7);
    OP_REQUIRES(context, gate_seq.dims() == 3 && c_seq.dims() == 3,
                tensorflow::errors::InvalidArgument(
                    "saved tensors must be rank 3"));
    const int64_t batch = gate_seq.dim_size(0);
    const int64_t time = gate_seq.dim_size(1);
    const int64_t units = recurrent_kernel.dim_size(0);
    const int64_t gates = 4 * units;
    const int64_t out_time = d_outputs.dim_size(1);
    OP_REQUIRES(
        context,
        gate_seq.dim_size(2) == gates && c_seq.dim_size(1) == time &&
            d_outputs.dims() == 3 && (out_time == time || out_time == 1) &&
            c0.NumElements() == batch * units &&
            d_h_last.NumElements() == batch * units &&
            d_c_last.NumElements() == batch * units,
        tensorflow::errors::InvalidArgument("inconsistent LSTM shapes"));
    const bool has_mask = mask.NumElements() > 0;
    OP_REQUIRES(context, !has_mask || mask.NumElements() == batch * time,
                tensorflow::errors::InvalidArgument(
                    "mask must be [batch, timesteps] or empty"));

    Tensor *d_z, *d_h0, *d_c0;
    // dz may take over the gates' buffer: step k reads its gates before it
    // writes its dz, and no step reads another step's gates.
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output(
                                {4}, 0, gate_seq.shape(), &d_z));
    OP_REQUIRES_OK(context, context->allocate_output(1, c0.shape(), &d_h0));
    OP_REQUIRES_OK(context, context->allocate_output(2, c0.shape(), &d_c0));
    if (batch == 0) return;

    // U^T [4H, H]: element (k, n) is U[n, k].
    const PackedMatrix U_t(recurrent_kernel.flat<float>().data(), gates, units,
                           1, gates);
    const float* c0_data = c0.flat<float>().data();
    const float* mask_data = has_mask ? mask.flat<float>().data() : nullptr;
    const float* c_seq_data = c_seq.flat<float>().data();
    const float* gate_data = gate_seq.flat<float>().data();
    const float* d_out_data = d_outputs.flat<float>().data();
    const float* d_h_last_data = d_h_last.flat<float>().data();
    const float* d_c_last_data = d_c_last.flat<float>().data();
    float* d_z_data = d_z->flat<float>().data();
    float* d_h0_data = d_h0->flat<float>().data();
    float* d_c0_data = d_c0->flat<float>().data();
    const bool go_backwards = go_backwards_;
    const bool zero_output = zero_output_for_mask_;

    ForEachRowBlock(context, batch, [&](int64_t row_begin, int64_t row_end) {
      const int64_t rows = row_end - row_begin;
      RowMatrix delta_h(rows, units), delta_c(rows, units);
      RowMatrix delta_h_in(rows, units);
      RowMatrix dz(rows, gates);
      // Gradient reaching an output that later masked steps copied forward.
      RowMatrix carried = RowMatrix::Zero(rows, units);
      Eigen::ArrayXf delta_out(units), delta_h_t(units), delta_c_t(units),
          tanh_c(units);
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
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = row_begin + r;
          const int64_t offset = row * time + step;
          ArrayMap carried_row(carried.row(r).data(), units);
          delta_out = carried_row;
          if (out_time == time || step == time - 1) {
            const int64_t out_step = out_time == time ? step : 0;
            delta_out += ConstArrayMap(
                d_out_data + (row * out_time + out_step) * units, units);
          }
          real[r] = !has_mask || mask_data[row * time + t] > 0.5f;
          ArrayMap dz_row(dz.row(r).data(), gates);
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
          ConstArrayMap input_gate(g, units), forget_gate(g + units, units),
              candidate(g + 2 * units, units),
              output_gate(g + 3 * units, units);
          const float* c_prev = step > 0 ? c_seq_data + (offset - 1) * units
                                         : c0_data + row * units;
          tanh_c = ConstArrayMap(c_seq_data + offset * units, units).tanh();
          ArrayMap delta_h_row(delta_h.row(r).data(), units);
          ArrayMap delta_c_row(delta_c.row(r).data(), units);
          delta_h_t = delta_out + delta_h_row;
          delta_c_t = delta_c_row +
                      delta_h_t * output_gate * (1.0f - tanh_c * tanh_c);
          dz_row.segment(0, units) =
              delta_c_t * candidate * input_gate * (1.0f - input_gate);
          dz_row.segment(units, units) = delta_c_t *
                                         ConstArrayMap(c_prev, units) *
                                         forget_gate * (1.0f - forget_gate);
          dz_row.segment(2 * units, units) =
              delta_c_t * input_gate * (1.0f - candidate * candidate);
          dz_row.segment(3 * units, units) =
              delta_h_t * tanh_c * output_gate * (1.0f - output_gate);
          delta_c_row = delta_c_t * forget_gate;
        }
        BackRecurrent(delta_h_in, dz, U_t);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = row_begin + r;
          // A masked step forwarded h_prev untouched: its gradient passes.
          if (real[r]) delta_h.row(r) = delta_h_in.row(r);
          std::copy_n(dz.row(r).data(), gates,
                      d_z_data + (row * time + step) * gates);
        }
      }
      std::copy_n(delta_h.data(), rows * units, d_h0_data + row_begin * units);
      std::copy_n(delta_c.data(), rows * units, d_c0_data + row_begin * units);
    });
  }

 private:
  bool go_backwards_;
  bool zero_output_for_mask_;
};

REGISTER_KERNEL_BUILDER(Name("LstmKerasSequenceGrad").Device(DEVICE_CPU),
                        LstmKerasSequenceGradOp);

}  // namespace lstm_keras
