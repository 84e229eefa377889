// The matrix products of lstm_keras's LSTM ops (lstm_kernels.cc), for the
// small shapes they run: a block's rows (one per batch row, or one per
// timestep of a row) by the 4H gate columns.
//
// The ops multiply by the same three matrices, W, U and U^T, on every step,
// so each op packs them once into column panels (PackedMatrix) and the
// products stream the panels through register-tiled micro-kernels. Three
// kernels share one tiling: AVX-512 (16-float vectors, 32 registers: tiles
// of up to 12 rows by 2 panels), AVX2/FMA (8-float vectors, 16 registers:
// 6 rows by 1 panel) and a portable one in which Eigen multiplies each tile
// for whatever SIMD the build targets. The x86 kernels are compiled for
// their instruction sets whatever the build's -march, and Gemm picks one at
// run time: the best the CPU has, unless SetGemmIsa chose another (tests
// run every kernel the machine can; benchmarks compare them). Each output
// element is one chain of FMAs over k in order in both x86 kernels, so
// their results are identical.
//
// The weight gradients dW = x^T dz and dU = h_prev^T dz use the same
// kernels: PackPanels packs a buffer of dz rows and TransposeRows gathers
// and transposes the matching rows of x and h_prev.

#ifndef LSTM_KERAS_BACKENDS_TENSORFLOW_PACKED_GEMM_H_
#define LSTM_KERAS_BACKENDS_TENSORFLOW_PACKED_GEMM_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define LSTM_KERAS_X86 1
#include <immintrin.h>
#endif

#include "Eigen/Core"

namespace lstm_keras {

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

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

// The micro-kernels. Each is a struct with its tile sizes and
// Tile<MR, NP, kAccumulate>(a, b, panel, c, ldc, width):
// c[MR, NP panels] (+)= a[MR, K] @ the NP panels starting at `panel`. Only
// the first `width` columns of c are written (the last panel may be
// partial). kTileRows and kTilePanels size the tiles of a product of many
// rows, kVectorPanels the panels per call for a single row, enough
// independent FMA chains to hide their latency.

// Eigen multiplies each tile, for whatever SIMD the build targets.
struct PortableKernel {
  static constexpr int kTileRows = 6;
  static constexpr int kTilePanels = 1;
  static constexpr int kVectorPanels = 4;

  template <int MR, int NP, bool kAccumulate>
  static void Tile(Rows a, const Panels& b, const float* panel, float* c,
                   int64_t ldc, int64_t width) {
    using Product = Eigen::Matrix<float, MR, kPanel, Eigen::RowMajor>;
    const Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>> a_tile(
        a.data, MR, b.k_size, Eigen::OuterStride<>(a.row_stride));
    for (int q = 0; q < NP; ++q) {
      const int64_t columns = std::min<int64_t>(width - q * kPanel, kPanel);
      if (columns <= 0) break;
      const Product product =
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
};

#if LSTM_KERAS_X86

#pragma GCC push_options
#pragma GCC target("avx2,fma")

// The products in registers: MR * NP * 2 accumulators of 8 floats. 6 rows
// x 16 columns is 12 accumulators, which with the two panel loads and a
// broadcast fills AVX2's 16 registers.
struct Avx2Kernel {
  static constexpr int kTileRows = 6;
  static constexpr int kTilePanels = 1;
  static constexpr int kVectorPanels = 4;

  template <int MR, int NP, bool kAccumulate>
  static void Tile(Rows a, const Panels& b, const float* panel, float* c,
                   int64_t ldc, int64_t width) {
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
};

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")

// One 16-float vector per panel: MR * NP accumulators. 12 rows x 2 panels
// is 24, which with the two panel loads and a broadcast leaves AVX-512's 32
// registers a few spare; each panel load then feeds 12 FMAs instead of
// AVX2's 6. A single row takes four panels per call, four chains of 16
// floats: eight streamed at once ran batch-1 inference 10% slower on a
// Zen 4, whose AVX-512 units are 256 bits wide.
struct Avx512Kernel {
  static constexpr int kTileRows = 12;
  static constexpr int kTilePanels = 2;
  static constexpr int kVectorPanels = 4;

  template <int MR, int NP, bool kAccumulate>
  static void Tile(Rows a, const Panels& b, const float* panel, float* c,
                   int64_t ldc, int64_t width) {
    __m512 acc[MR][NP];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) acc[i][q] = _mm512_setzero_ps();
    }
    const float* a_k = a.data;
    const float* b_k = panel;
    for (int64_t k = 0; k < b.k_size; ++k) {
      __m512 b_vectors[NP];
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) {
        b_vectors[q] = _mm512_loadu_ps(b_k + q * b.panel_stride);
      }
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512 a_ik = _mm512_set1_ps(a_k[i * a.row_stride]);
#pragma GCC unroll 16
        for (int q = 0; q < NP; ++q) {
          acc[i][q] = _mm512_fmadd_ps(a_ik, b_vectors[q], acc[i][q]);
        }
      }
      ++a_k;
      b_k += b.k_stride;
    }
    // A partial panel's columns by mask: the accumulators stay in
    // registers (indexing them with a runtime column would spill them).
    __mmask16 masks[NP];
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) {
      const int64_t columns = std::clamp<int64_t>(width - q * kPanel, 0, kPanel);
      masks[q] = static_cast<__mmask16>((1u << columns) - 1u);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) {
        float* out = c + i * ldc + q * kPanel;
        const __m512 sum =
            kAccumulate
                ? _mm512_add_ps(_mm512_maskz_loadu_ps(masks[q], out), acc[i][q])
                : acc[i][q];
        _mm512_mask_storeu_ps(out, masks[q], sum);
      }
    }
  }
};

#pragma GCC pop_options

#endif  // LSTM_KERAS_X86

// MR rows of c against panels [first, last), NP panels per kernel call.
template <class Kernel, int MR, int NP, bool kAccumulate>
inline void PanelRange(Rows a, const Panels& b, int64_t first, int64_t last,
                       float* c, int64_t ldc) {
  int64_t p = first;
  for (; p + NP <= last; p += NP) {
    Kernel::template Tile<MR, NP, kAccumulate>(
        a, b, b.panel(p), c + p * kPanel, ldc, b.n_size - p * kPanel);
  }
  for (; p < last; ++p) {
    Kernel::template Tile<MR, 1, kAccumulate>(
        a, b, b.panel(p), c + p * kPanel, ldc, b.n_size - p * kPanel);
  }
}

// A tile of `height` rows (1 to MR) against panels [first, last): the
// kernel instantiated for that height.
template <class Kernel, int MR, bool kAccumulate>
inline void TileOfHeight(int64_t height, Rows a, const Panels& b,
                         int64_t first, int64_t last, float* c,
                         int64_t ldc) {
  if constexpr (MR > 1) {
    if (height < MR) {
      TileOfHeight<Kernel, MR - 1, kAccumulate>(height, a, b, first, last, c,
                                                ldc);
      return;
    }
  }
  PanelRange<Kernel, MR, Kernel::kTilePanels, kAccumulate>(a, b, first,
                                                           last, c, ldc);
}

// Below this many rows, one row at a time.
constexpr int64_t kMinGemmRows = 4;

// c[rows, N] = a[rows, K] @ B (or +=, kAccumulate) with `Kernel`.
template <class Kernel, bool kAccumulate>
void TiledGemm(Rows a, int64_t rows, const Panels& b, float* c, int64_t ldc) {
  if (rows < kMinGemmRows) {
    // Matrix-vector products: one row at a time.
    for (int64_t r = 0; r < rows; ++r) {
      PanelRange<Kernel, 1, Kernel::kVectorPanels, kAccumulate>(
          a.Offset(r), b, 0, b.panels(), c + r * ldc, ldc);
    }
    return;
  }
  // Tiles of nearly equal height (32 rows in tiles of at most 6:
  // 6,6,5,5,5,5), not full tiles and a thin remainder that would keep too
  // few accumulators busy.
  const int64_t tiles = (rows + Kernel::kTileRows - 1) / Kernel::kTileRows;
  // Panel-outer, so a group of panels of B stays in L1 while every row tile
  // uses it.
  for (int64_t p = 0; p < b.panels(); p += Kernel::kTilePanels) {
    const int64_t last = std::min<int64_t>(b.panels(), p + Kernel::kTilePanels);
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t r = rows * tile / tiles;
      TileOfHeight<Kernel, Kernel::kTileRows, kAccumulate>(
          rows * (tile + 1) / tiles - r, a.Offset(r), b, p, last,
          c + r * ldc, ldc);
    }
  }
}

// The instruction sets Gemm can run its products on.
enum class GemmIsa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

inline bool GemmIsaSupported(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::kPortable:
      return true;
#if LSTM_KERAS_X86
    case GemmIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case GemmIsa::kAvx512:
      return __builtin_cpu_supports("avx512f");
#endif
    default:
      return false;
  }
}

inline GemmIsa BestGemmIsa() {
  static const GemmIsa best = [] {
    for (GemmIsa isa : {GemmIsa::kAvx512, GemmIsa::kAvx2}) {
      if (GemmIsaSupported(isa)) return isa;
    }
    return GemmIsa::kPortable;
  }();
  return best;
}

// The kernel SetGemmIsa chose, or -1 for the best the CPU has.
inline std::atomic<int>& GemmIsaChoice() {
  static std::atomic<int> choice{-1};
  return choice;
}

inline GemmIsa ActiveGemmIsa() {
  const int choice = GemmIsaChoice().load(std::memory_order_relaxed);
  return choice < 0 ? BestGemmIsa() : static_cast<GemmIsa>(choice);
}

// Makes Gemm run on `isa` (-1: the best the CPU has) and returns true, or
// returns false and changes nothing if the CPU cannot run it.
inline bool SetGemmIsa(int isa) {
  if (isa >= 0 && !(isa <= static_cast<int>(GemmIsa::kAvx512) &&
                    GemmIsaSupported(static_cast<GemmIsa>(isa)))) {
    return false;
  }
  GemmIsaChoice().store(isa < 0 ? -1 : isa, std::memory_order_relaxed);
  return true;
}

// c[rows, N] = a[rows, K] @ B (or +=, kAccumulate), on the active kernel.
template <bool kAccumulate>
void Gemm(Rows a, int64_t rows, const Panels& b, float* c, int64_t ldc) {
  switch (ActiveGemmIsa()) {
#if LSTM_KERAS_X86
    case GemmIsa::kAvx512:
      TiledGemm<Avx512Kernel, kAccumulate>(a, rows, b, c, ldc);
      return;
    case GemmIsa::kAvx2:
      TiledGemm<Avx2Kernel, kAccumulate>(a, rows, b, c, ldc);
      return;
#endif
    default:
      TiledGemm<PortableKernel, kAccumulate>(a, rows, b, c, ldc);
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
inline Panels PackPanels(const float* b, int64_t k_size, int64_t n_size,
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
inline void TransposeRows(const std::vector<const float*>& rows_at,
                          int64_t cols, float* out) {
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

}  // namespace lstm_keras

#endif  // LSTM_KERAS_BACKENDS_TENSORFLOW_PACKED_GEMM_H_
