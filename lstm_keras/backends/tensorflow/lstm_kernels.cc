// The LSTM recurrence as two TensorFlow CPU ops, for lstm_keras's fast path
// (fast_path.py calls them; build.py compiles this file and its headers on
// first use). This file holds the ops: their registration and shape
// functions, the checks of their inputs, the allocation of their outputs
// and the loops over rows and timesteps. The matrix products are in
// packed_gemm.h, the per-row gate math in lstm_step.h, the helpers that
// check a shape and word its error in shape_checks.h.
//
// LstmKerasSequence runs the whole sequence: it projects the inputs
// (x_t @ W + b) a chunk of timesteps at a time, then for each step multiplies
// h_prev @ U and applies the gates, exactly as lstm_keras.LSTMCell does.
// Masked steps keep h and c and output zeros (zero_output_for_mask) or the
// previous output, as dispatch.generic_lstm_sequence does. With
// save_for_backward it also returns what LstmKerasSequenceGrad and the
// weight gradients need: the activated gates (computed in place in that
// output), the cell states c_t and the states h_prev entering each step;
// without, its memory does not grow with T beyond the outputs asked for.
//
// LstmKerasSequenceGrad runs backpropagation through time and returns every
// gradient: of x (unless compute_d_x is false), W, U, the bias, h_0 and c_0.
// It sums dW = x^T dz and dU = h_prev^T dz per thread over blocks of
// (row, step) samples as it goes, so dz [B, T, 4H] never exists whole.
//
// The recurrence is independent per batch row, so both ops split the batch
// into one contiguous block of rows per CPU worker thread, and each block
// runs the whole time loop on its own rows: no per-step synchronisation.
//
// Layouts, with the names the shape checks use for the sizes (B
// batch_size, T timesteps, D input_dim, H units): x [B, T, D], kernel W
// [D, 4H], bias b [4H], recurrent_kernel U [H, 4H], h0, c0 [B, H], mask
// [B, T] float (1 real, 0 padded) or empty, recurrent_mask [B, H] (the
// recurrent dropout mask on h_prev) or empty, outputs [B, T or 1, H], saved
// tensors [B, T, .] in processing order (reversed time when go_backwards).

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "lstm_step.h"
#include "packed_gemm.h"
#include "shape_checks.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace lstm_keras {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Timesteps projected per input GEMM: large enough for an efficient GEMM,
// small enough that the buffer stays in cache and memory stays flat in T.
constexpr int64_t kChunk = 32;

// Rows of dz (one per row and step) gathered for each weight gradient
// product: K = 512 keeps a packed 16-column panel of dz (32 KiB) in L1.
constexpr int64_t kWeightGradSamples = 512;

// ---------------------------------------------------------------------------
// Helpers of both ops' loops.

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

// ---------------------------------------------------------------------------
// LstmKerasSequence

absl::Status SequenceShape(InferenceContext* c) {
  const DimensionHandle any = c->UnknownDim();
  ShapeHandle x, recurrent_kernel, h0, unused;
  TF_RETURN_IF_ERROR(CheckShape(
      c, "x", {{"batch_size", any}, {"timesteps", any}, {"input_dim", any}},
      &x));
  DimensionHandle batch = c->Dim(x, 0);
  const DimensionHandle time = c->Dim(x, 1);
  const DimensionHandle input_dim = c->Dim(x, 2);
  TF_RETURN_IF_ERROR(CheckShape(c, "recurrent_kernel",
                                {{"units", any}, {"4 * units", any}},
                                &recurrent_kernel));
  DimensionHandle units = c->Dim(recurrent_kernel, 0);
  DimensionHandle gates;
  TF_RETURN_IF_ERROR(c->Multiply(units, 4, &gates));
  TF_RETURN_IF_ERROR(CheckShape(c, "recurrent_kernel",
                                {{"units", units}, {"4 * units", gates}},
                                &unused));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "kernel", {{"input_dim", input_dim}, {"4 * units", gates}}, &unused));
  TF_RETURN_IF_ERROR(CheckShape(c, "bias", {{"4 * units", gates}}, &unused));
  TF_RETURN_IF_ERROR(
      CheckShape(c, "h0", {{"batch_size", batch}, {"units", units}}, &h0));
  TF_RETURN_IF_ERROR(
      CheckShape(c, "c0", {{"batch_size", batch}, {"units", units}}, &unused));
  TF_RETURN_IF_ERROR(CheckOptionalShape(
      c, "mask", {{"batch_size", batch}, {"timesteps", time}}));
  TF_RETURN_IF_ERROR(CheckOptionalShape(
      c, "recurrent_mask", {{"batch_size", batch}, {"units", units}}));
  // The checks passed, so these merges do: the outputs get every size
  // that any input makes known.
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(h0, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(units, c->Dim(h0, 1), &units));
  TF_RETURN_IF_ERROR(c->Multiply(units, 4, &gates));

  bool return_sequences, save;
  TF_RETURN_IF_ERROR(c->GetAttr("return_sequences", &return_sequences));
  TF_RETURN_IF_ERROR(c->GetAttr("save_for_backward", &save));
  const DimensionHandle saved_time = save ? time : c->MakeDim(0);
  c->set_output(0, c->MakeShape({batch, return_sequences ? time
                                                         : c->MakeDim(1),
                                 units}));
  c->set_output(1, c->MakeShape({batch, units}));
  c->set_output(2, c->MakeShape({batch, units}));
  c->set_output(3, c->MakeShape({batch, saved_time, units}));
  c->set_output(4, c->MakeShape({batch, saved_time, units}));
  c->set_output(5, c->MakeShape({batch, saved_time, gates}));
  return absl::OkStatus();
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

// The inputs both ops take, read by name and checked: x gives batch_size,
// timesteps and input_dim, recurrent_kernel units; the others are checked
// against them.
struct SharedInputs {
  const Tensor *x, *kernel, *recurrent_kernel, *c0, *mask, *recurrent_mask;
  int64_t batch, time, input_dim, units, gates;
  bool has_mask, has_dropout;
};

absl::Status ReadSharedInputs(OpKernelContext* context, SharedInputs* in) {
  for (const auto& [name, tensor] :
       {std::pair<const char*, const Tensor**>{"x", &in->x},
        {"kernel", &in->kernel},
        {"recurrent_kernel", &in->recurrent_kernel},
        {"c0", &in->c0},
        {"mask", &in->mask},
        {"recurrent_mask", &in->recurrent_mask}}) {
    TF_RETURN_IF_ERROR(context->input(name, tensor));
  }
  TF_RETURN_IF_ERROR(CheckShape("x", *in->x,
                                {{"batch_size", kAnySize},
                                 {"timesteps", kAnySize},
                                 {"input_dim", kAnySize}}));
  in->batch = in->x->dim_size(0);
  in->time = in->x->dim_size(1);
  in->input_dim = in->x->dim_size(2);
  TF_RETURN_IF_ERROR(
      CheckShape("recurrent_kernel", *in->recurrent_kernel,
                 {{"units", kAnySize}, {"4 * units", kAnySize}}));
  in->units = in->recurrent_kernel->dim_size(0);
  in->gates = 4 * in->units;
  TF_RETURN_IF_ERROR(
      CheckShape("recurrent_kernel", *in->recurrent_kernel,
                 {{"units", in->units}, {"4 * units", in->gates}}));
  TF_RETURN_IF_ERROR(CheckShape("kernel", *in->kernel,
                                {{"input_dim", in->input_dim},
                                 {"4 * units", in->gates}}));
  TF_RETURN_IF_ERROR(CheckShape("c0", *in->c0, {{"batch_size", in->batch},
                                                {"units", in->units}}));
  in->has_mask = in->mask->NumElements() > 0;
  if (in->has_mask) {
    TF_RETURN_IF_ERROR(CheckShape("mask", *in->mask,
                                  {{"batch_size", in->batch},
                                   {"timesteps", in->time}}));
  }
  in->has_dropout = in->recurrent_mask->NumElements() > 0;
  if (in->has_dropout) {
    TF_RETURN_IF_ERROR(CheckShape("recurrent_mask", *in->recurrent_mask,
                                  {{"batch_size", in->batch},
                                   {"units", in->units}}));
  }
  return absl::OkStatus();
}

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
    SharedInputs in;
    OP_REQUIRES_OK(context, ReadSharedInputs(context, &in));
    const Tensor *bias, *h0;
    OP_REQUIRES_OK(context, context->input("bias", &bias));
    OP_REQUIRES_OK(context, context->input("h0", &h0));
    const Tensor *x = in.x, *kernel = in.kernel,
                 *recurrent_kernel = in.recurrent_kernel, *c0 = in.c0,
                 *mask = in.mask, *recurrent_mask = in.recurrent_mask;
    const int64_t batch = in.batch, time = in.time, input_dim = in.input_dim,
                  units = in.units, gates = in.gates;
    const bool has_mask = in.has_mask, has_dropout = in.has_dropout;
    OP_REQUIRES_OK(context, CheckShape("bias", *bias, {{"4 * units", gates}}));
    OP_REQUIRES_OK(context, CheckShape("h0", *h0, {{"batch_size", batch},
                                                   {"units", units}}));

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

    const float* x_data = x->flat<float>().data();
    const float* mask_data = has_mask ? mask->flat<float>().data() : nullptr;
    const float* dropout_data =
        has_dropout ? recurrent_mask->flat<float>().data() : nullptr;
    const float* h0_data = h0->flat<float>().data();
    const float* c0_data = c0->flat<float>().data();
    float* out_data = outputs->flat<float>().data();
    float* h_prev_data = save_ ? h_prev_seq->flat<float>().data() : nullptr;
    float* c_seq_data = save_ ? c_seq->flat<float>().data() : nullptr;
    float* gate_data = save_ ? gate_seq->flat<float>().data() : nullptr;
    const PackedMatrix W(kernel->flat<float>().data(), input_dim, gates,
                         gates, 1);
    const PackedMatrix U(recurrent_kernel->flat<float>().data(), units, gates,
                         gates, 1);
    const float* b = bias->flat<float>().data();
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

// ---------------------------------------------------------------------------
// LstmKerasSequenceGrad

absl::Status SequenceGradShape(InferenceContext* c) {
  const DimensionHandle any = c->UnknownDim();
  ShapeHandle x, recurrent_kernel, d_outputs, unused;
  TF_RETURN_IF_ERROR(CheckShape(
      c, "x", {{"batch_size", any}, {"timesteps", any}, {"input_dim", any}},
      &x));
  const DimensionHandle batch = c->Dim(x, 0);
  const DimensionHandle time = c->Dim(x, 1);
  const DimensionHandle input_dim = c->Dim(x, 2);
  TF_RETURN_IF_ERROR(CheckShape(c, "recurrent_kernel",
                                {{"units", any}, {"4 * units", any}},
                                &recurrent_kernel));
  const DimensionHandle units = c->Dim(recurrent_kernel, 0);
  DimensionHandle gates;
  TF_RETURN_IF_ERROR(c->Multiply(units, 4, &gates));
  TF_RETURN_IF_ERROR(CheckShape(c, "recurrent_kernel",
                                {{"units", units}, {"4 * units", gates}},
                                &unused));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "kernel", {{"input_dim", input_dim}, {"4 * units", gates}}, &unused));
  TF_RETURN_IF_ERROR(
      CheckShape(c, "c0", {{"batch_size", batch}, {"units", units}}, &unused));
  TF_RETURN_IF_ERROR(CheckOptionalShape(
      c, "mask", {{"batch_size", batch}, {"timesteps", time}}));
  TF_RETURN_IF_ERROR(CheckOptionalShape(
      c, "recurrent_mask", {{"batch_size", batch}, {"units", units}}));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "h_prev_seq",
      {{"batch_size", batch}, {"timesteps", time}, {"units", units}},
      &unused));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "c_seq",
      {{"batch_size", batch}, {"timesteps", time}, {"units", units}},
      &unused));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "gates",
      {{"batch_size", batch}, {"timesteps", time}, {"4 * units", gates}},
      &unused));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "d_outputs",
      {{"batch_size", batch}, {"timesteps or 1", any}, {"units", units}},
      &d_outputs));
  const DimensionHandle out_time = c->Dim(d_outputs, 1);
  if (c->ValueKnown(out_time) && c->ValueKnown(time) &&
      c->Value(out_time) != c->Value(time) && c->Value(out_time) != 1) {
    return DimError("d_outputs", 1, "timesteps or 1", c->DebugString(out_time),
                    c->DebugString(time));
  }
  TF_RETURN_IF_ERROR(CheckShape(
      c, "d_h_last", {{"batch_size", batch}, {"units", units}}, &unused));
  TF_RETURN_IF_ERROR(CheckShape(
      c, "d_c_last", {{"batch_size", batch}, {"units", units}}, &unused));

  // The gradients have the shapes of the inputs they are of.
  bool compute_d_x;
  TF_RETURN_IF_ERROR(c->GetAttr("compute_d_x", &compute_d_x));
  c->set_output(0, compute_d_x ? c->input(0) : c->Vector(0));
  c->set_output(1, c->input(1));
  c->set_output(2, c->input(2));
  DimensionHandle bias_size;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(c->input(3), 1), 4, &bias_size));
  c->set_output(3, c->Vector(bias_size));
  c->set_output(4, c->input(3));
  c->set_output(5, c->input(3));
  return absl::OkStatus();
}

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
    .SetShapeFn(SequenceGradShape);

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
    SharedInputs in;
    OP_REQUIRES_OK(context, ReadSharedInputs(context, &in));
    const Tensor *h_prev_seq, *c_seq, *gate_seq, *d_outputs, *d_h_last,
        *d_c_last;
    OP_REQUIRES_OK(context, context->input("h_prev_seq", &h_prev_seq));
    OP_REQUIRES_OK(context, context->input("c_seq", &c_seq));
    OP_REQUIRES_OK(context, context->input("gates", &gate_seq));
    OP_REQUIRES_OK(context, context->input("d_outputs", &d_outputs));
    OP_REQUIRES_OK(context, context->input("d_h_last", &d_h_last));
    OP_REQUIRES_OK(context, context->input("d_c_last", &d_c_last));
    const Tensor *x = in.x, *kernel = in.kernel,
                 *recurrent_kernel = in.recurrent_kernel, *c0 = in.c0,
                 *mask = in.mask, *recurrent_mask = in.recurrent_mask;
    const int64_t batch = in.batch, time = in.time, input_dim = in.input_dim,
                  units = in.units, gates = in.gates;
    const bool has_mask = in.has_mask, has_dropout = in.has_dropout;
    OP_REQUIRES_OK(context, CheckShape("h_prev_seq", *h_prev_seq,
                                       {{"batch_size", batch},
                                        {"timesteps", time},
                                        {"units", units}}));
    OP_REQUIRES_OK(context, CheckShape("c_seq", *c_seq,
                                       {{"batch_size", batch},
                                        {"timesteps", time},
                                        {"units", units}}));
    OP_REQUIRES_OK(context, CheckShape("gates", *gate_seq,
                                       {{"batch_size", batch},
                                        {"timesteps", time},
                                        {"4 * units", gates}}));
    // d_outputs has timesteps steps (return_sequences) or only the last.
    OP_REQUIRES_OK(context, CheckShape("d_outputs", *d_outputs,
                                       {{"batch_size", batch},
                                        {"timesteps or 1", kAnySize},
                                        {"units", units}}));
    const int64_t out_time = d_outputs->dim_size(1);
    OP_REQUIRES(context, out_time == time || out_time == 1,
                DimError<int64_t>("d_outputs", 1, "timesteps or 1", out_time,
                                  time));
    OP_REQUIRES_OK(context, CheckShape("d_h_last", *d_h_last,
                                       {{"batch_size", batch},
                                        {"units", units}}));
    OP_REQUIRES_OK(context, CheckShape("d_c_last", *d_c_last,
                                       {{"batch_size", batch},
                                        {"units", units}}));

    Tensor *d_x, *d_kernel, *d_recurrent_kernel, *d_bias, *d_h0, *d_c0;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, compute_d_x_ ? x->shape() : TensorShape({0}), &d_x));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, kernel->shape(), &d_kernel));
    OP_REQUIRES_OK(context, context->allocate_output(
                                2, recurrent_kernel->shape(),
                                &d_recurrent_kernel));
    OP_REQUIRES_OK(context, context->allocate_output(
                                3, TensorShape({gates}), &d_bias));
    OP_REQUIRES_OK(context, context->allocate_output(4, c0->shape(), &d_h0));
    OP_REQUIRES_OK(context, context->allocate_output(5, c0->shape(), &d_c0));
    d_kernel->flat<float>().setZero();
    d_recurrent_kernel->flat<float>().setZero();
    d_bias->flat<float>().setZero();
    if (batch == 0) return;

    // U^T [4H, H] and W^T [4H, D]: element (k, n) is U[n, k] / W[n, k].
    const PackedMatrix U_t(recurrent_kernel->flat<float>().data(), gates, units,
                           1, gates);
    const bool compute_d_x = compute_d_x_ && input_dim > 0;
    const PackedMatrix W_t(kernel->flat<float>().data(),
                           compute_d_x ? gates : 0, input_dim, 1, gates);
    const float* x_data = x->flat<float>().data();
    const float* c0_data = c0->flat<float>().data();
    const float* mask_data = has_mask ? mask->flat<float>().data() : nullptr;
    const float* dropout_data =
        has_dropout ? recurrent_mask->flat<float>().data() : nullptr;
    const float* h_prev_data = h_prev_seq->flat<float>().data();
    const float* c_seq_data = c_seq->flat<float>().data();
    const float* gate_data = gate_seq->flat<float>().data();
    const float* d_out_data = d_outputs->flat<float>().data();
    const float* d_h_last_data = d_h_last->flat<float>().data();
    const float* d_c_last_data = d_c_last->flat<float>().data();
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

// Which micro-kernel the products run on (packed_gemm.h), for build.py's
// gemm_isa functions through ctypes: tests run every kernel the CPU has,
// benchmarks compare them. Values are GemmIsa's: 0 portable, 1 AVX2/FMA,
// 2 AVX-512.
extern "C" {

__attribute__((visibility("default"))) int lstm_keras_gemm_isa() {
  return static_cast<int>(lstm_keras::ActiveGemmIsa());
}

__attribute__((visibility("default"))) int lstm_keras_gemm_isa_supported(
    int isa) {
  return isa >= 0 && isa <= static_cast<int>(lstm_keras::GemmIsa::kAvx512) &&
         lstm_keras::GemmIsaSupported(static_cast<lstm_keras::GemmIsa>(isa));
}

// -1 restores the automatic choice. Returns 1, or 0 (and changes nothing)
// where the CPU cannot run `isa`.
__attribute__((visibility("default"))) int lstm_keras_set_gemm_isa(int isa) {
  return lstm_keras::SetGemmIsa(isa);
}

}  // extern "C"
