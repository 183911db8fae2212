// Fused fp32 CPU decoder forward (see cpu_decoder.h). Compiled with -mavx2 -mfma -ffp-contract=off: every
// multiply-add that torch rounds twice (RMSNorm, RoPE, residual adds) is rounded twice here too, and the only
// fused multiply-adds are the GEMM accumulations, which run over k in order from zero like MKL's kernels.
#include "cpu_decoder.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "spin_pool.h"

namespace cpudec {
namespace {

constexpr int64_t kPanel = 16;     // columns per packed panel (two 8-float vectors)
constexpr int64_t kQueryBlock = 64;   // at most this many queries per attention work item (balanced blocks)
constexpr int64_t kKeyChunk = 256;    // keys per step of the attention pass (a multiple of 16)

// ----- GEMM ------------------------------------------------------------------------------------------------------
// C[MR, 16 NP] = A[MR, K] B[K, 16 NP]; B is NP panels of 16 columns, panel p at B + p * pstride, row k at + k * ldb.
// Each C element is one FMA chain over k = 0..K-1 starting from zero. With QK (attention scores), C is stored
// times `scale` and rmax[8 r .. 8 r + 7] keeps the running lane-wise maximum of row r (the softmax's first
// pass, for free).
template <int MR, int NP, bool QK>
inline void micro(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t pstride, float* C,
                  int64_t ldc, float scale, float* rmax) {
  __m256 acc[MR][NP][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) acc[r][p][0] = acc[r][p][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 b[NP][2];
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) {
      b[p][0] = _mm256_loadu_ps(B + p * pstride + k * ldb);
      b[p][1] = _mm256_loadu_ps(B + p * pstride + k * ldb + 8);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) {
        acc[r][p][0] = _mm256_fmadd_ps(a, b[p][0], acc[r][p][0]);
        acc[r][p][1] = _mm256_fmadd_ps(a, b[p][1], acc[r][p][1]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) {
      if constexpr (QK) {
        const __m256 vs = _mm256_set1_ps(scale);
        acc[r][p][0] = _mm256_mul_ps(acc[r][p][0], vs);
        acc[r][p][1] = _mm256_mul_ps(acc[r][p][1], vs);
        const __m256 m = _mm256_max_ps(_mm256_loadu_ps(rmax + 8 * r), _mm256_max_ps(acc[r][p][0], acc[r][p][1]));
        _mm256_storeu_ps(rmax + 8 * r, m);
      }
      _mm256_storeu_ps(C + r * ldc + p * kPanel, acc[r][p][0]);
      _mm256_storeu_ps(C + r * ldc + p * kPanel + 8, acc[r][p][1]);
    }
}

template <bool QK>
void micro_rows(int rows, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t pstride,
                float* C, int64_t ldc, float scale, float* rmax) {
  switch (rows) {
    case 1: micro<1, 1, QK>(K, A, lda, B, ldb, pstride, C, ldc, scale, rmax); break;
    case 2: micro<2, 1, QK>(K, A, lda, B, ldb, pstride, C, ldc, scale, rmax); break;
    case 3: micro<3, 1, QK>(K, A, lda, B, ldb, pstride, C, ldc, scale, rmax); break;
    case 4: micro<4, 1, QK>(K, A, lda, B, ldb, pstride, C, ldc, scale, rmax); break;
    case 5: micro<5, 1, QK>(K, A, lda, B, ldb, pstride, C, ldc, scale, rmax); break;
    default: micro<6, 1, QK>(K, A, lda, B, ldb, pstride, C, ldc, scale, rmax); break;
  }
}

// C[M, 16 np] = A[M, K] B[K, 16 np] over np panels of B (layout as in micro); QK: see micro (rmax[M]).
template <bool QK = false>
void gemm(int64_t M, int64_t np, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
          int64_t pstride, float* C, int64_t ldc, float scale = 1.0f, float* rmax = nullptr) {
  if (M == 1) {  // one row: four panels at once keep eight FMA chains in flight
    int64_t p = 0;
    for (; p + 4 <= np; p += 4)
      micro<1, 4, QK>(K, A, lda, B + p * pstride, ldb, pstride, C + p * kPanel, ldc, scale, rmax);
    for (; p < np; ++p) micro<1, 1, QK>(K, A, lda, B + p * pstride, ldb, pstride, C + p * kPanel, ldc, scale, rmax);
    return;
  }
  const int64_t blocks = (M + 5) / 6;
  const int64_t mr = (M + blocks - 1) / blocks;  // e.g. 10 rows -> 2 x 5, not 6 + 4
  for (int64_t p = 0; p < np; ++p)
    for (int64_t r = 0; r < M; r += mr)
      micro_rows<QK>(static_cast<int>(std::min(mr, M - r)), K, A + r * lda, lda, B + p * pstride, ldb, pstride,
                     C + r * ldc + p * kPanel, ldc, scale, QK ? rmax + 8 * r : nullptr);
}

// out[M, N] = x[M, K] W^T, W panel-packed [N/16][K][16]; work items are (48 rows) x (4 panels).
void linear_par(SpinPool& pool, int64_t M, int64_t K, const float* x, int64_t ldx, const float* w, int64_t N,
                float* out, int64_t ldo) {
  // few rows (decode): at least 4 items per thread so a late-waking worker still takes its share
  const int64_t np = N / kPanel, rc = 48, chunks = (M + rc - 1) / rc;
  const int64_t pg = chunks > 1 || M == 1 ? 4 : std::max<int64_t>(1, std::min<int64_t>(4, np / (4 * pool.threads())));
  const int64_t groups = (np + pg - 1) / pg;
  pool.run(groups * chunks, [&](int64_t item) {
    const int64_t g = item % groups, r0 = (item / groups) * rc;
    const int64_t p0 = g * pg, p1 = std::min(np, p0 + pg);
    gemm(std::min(rc, M - r0), p1 - p0, K, x + r0 * ldx, ldx, w + p0 * K * kPanel, kPanel, K * kPanel,
         out + r0 * ldo + p0 * kPanel, ldo);
  });
}

// ----- elementwise ---------------------------------------------------------------------------------------------------
// exp (Cephes expf polynomial, ~1 ulp) for x in [-87.3, 88.37]; below, exp(-87.3) ~ 1.2e-38 (the smallest
// normal float: 2^n stays a normal exponent, and a -inf input cannot reach 2^-128 = -inf bits). Callers mask
// what must be exactly 0; an unmasked one only ever adds it to a sum >= 1, where it vanishes.
inline __m256 exp256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, _mm256_add_ps(x, one));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y = w * (x * rsqrt(mean(x^2) + eps)), as torch evaluates the reference's rms_norm (C % 8 == 0).
void rmsnorm(const float* x, const float* w, int64_t C, float eps, float* y) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t d = 0; d < C; d += 8) {
    const __m256 v = _mm256_loadu_ps(x + d);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
  }
  const float var = hsum(acc) / static_cast<float>(C);
  const __m256 r = _mm256_set1_ps(1.0f / std::sqrt(var + eps));
  for (int64_t d = 0; d < C; d += 8)
    _mm256_storeu_ps(y + d, _mm256_mul_ps(_mm256_loadu_ps(w + d), _mm256_mul_ps(_mm256_loadu_ps(x + d), r)));
}

// x <- x * cos + rotate_half(x) * sin for one head vector of D floats (two roundings, no FMA, like torch).
void rope(float* x, const float* c, const float* s, int64_t D) {
  float t[256];
  const int64_t half = D / 2;
  for (int64_t d = 0; d < D; ++d) t[d] = x[d];
  for (int64_t d = 0; d < half; ++d) x[d] = t[d] * c[d] + (-t[d + half]) * s[d];
  for (int64_t d = half; d < D; ++d) x[d] = t[d] * c[d] + t[d - half] * s[d];
}

// act[j] = silu(g[j]) * u[j] = (g / (1 + exp(-g))) * u, n % 8 == 0.
void silu_mul(const float* g, const float* u, int64_t n, float* act) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 x = _mm256_loadu_ps(g + j);
    const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp256(_mm256_sub_ps(zero, x))));
    _mm256_storeu_ps(act + j, _mm256_mul_ps(s, _mm256_loadu_ps(u + j)));
  }
}

// 8 attendability bytes -> an all-ones float lane where the byte is non-zero.
inline __m256 mask8(const uint8_t* m) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m)));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(b, _mm256_setzero_si256()));
}

void add_rows(float* h, const float* t, int64_t n) {
  for (int64_t j = 0; j < n; j += 8)
    _mm256_storeu_ps(h + j, _mm256_add_ps(_mm256_loadu_ps(h + j), _mm256_loadu_ps(t + j)));
}

// ----- attention -----------------------------------------------------------------------------------------------------
struct AttnArgs {
  const float* qkv;        // [M, 3C] rotated q | rotated k | v
  const float* kp;         // this layer's key tiles [B, H, cap / 16, D, 16]
  const float* v;          // this layer's values [B, H, cap, D]
  const uint8_t* keymask;  // [B, cap]
  float* o;                // [B * nq, C]
  int64_t n, nq, L0, cap, C, H, D;
  float scale;
};

// Queries i0..i1-1 (of the n new tokens) of row b, head h: o = softmax(q k^T * scale + mask) v, computed like
// PyTorch's CPU flash attention: one pass over the keys in chunks, a running row max and sum, the output rescaled
// by exp(old max - new max) before each chunk's p v is added. Each K/V chunk is read once for all the block's
// queries, so the pass streams the cache at memory speed instead of re-reading it per query.
void attention_block(const AttnArgs& a, int64_t b, int64_t h, int64_t i0, int64_t i1) {
  thread_local std::vector<float> scratch;
  const int64_t rows = i1 - i0, D = a.D, C3 = 3 * a.C, ch = kKeyChunk;
  const int64_t keys = a.L0 + i1;  // the last query of the block sees keys [0, keys)
  if (static_cast<int64_t>(scratch.size()) < rows * (ch + 2 * D + 10))
    scratch.resize(rows * (ch + 2 * D + 10));
  float* S = scratch.data();       // [rows, ch] scores, then probabilities, of one chunk
  float* acc = S + rows * ch;      // [rows, D] running output
  float* pv = acc + rows * D;      // [rows, D] this chunk's p v
  float* mx = pv + rows * D;       // [rows] running max
  float* sum = mx + rows;          // [rows] running sum
  float* rmax = sum + rows;        // [rows, 8] lane-wise score maxima of an open chunk
  const float* q = a.qkv + (b * a.n + i0) * C3 + h * D;
  const float* kp = a.kp + (b * a.H + h) * (a.cap / kPanel) * D * kPanel;
  const float* vb = a.v + (b * a.H + h) * a.cap * D;
  const uint8_t* km = a.keymask + b * a.cap;
  const float ninf_s = -std::numeric_limits<float>::infinity();
  const __m256 scale = _mm256_set1_ps(a.scale), ninf = _mm256_set1_ps(ninf_s);
  const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t j0 = 0; j0 < keys; j0 += ch) {
    const int64_t cw = std::min(ch, keys - j0);           // keys in this chunk
    const int64_t tiles = (cw + kPanel - 1) / kPanel;      // whole 16-key tiles (j0 is a multiple of 16)
    // most chunks of a long cache are open to every query of the block (whole tiles, every key before the
    // first query, every key attendable): the GEMM scales them and takes the row maxima on the way out
    bool open = cw % kPanel == 0 && j0 + cw <= a.L0 + i0 + 1;
    for (int64_t j = 0; open && j < cw; ++j) open = km[j0 + j] != 0;
    const float* kchunk = kp + (j0 / kPanel) * D * kPanel;
    if (open) {
      for (int64_t r = 0; r < rows; ++r) _mm256_storeu_ps(rmax + 8 * r, ninf);
      gemm<true>(rows, tiles, D, q, C3, kchunk, kPanel, D * kPanel, S, ch, a.scale, rmax);
    } else {
      gemm(rows, tiles, D, q, C3, kchunk, kPanel, D * kPanel, S, ch);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* s = S + r * ch;
      __m256 m8 = ninf;
      int64_t j = 0;
      if (open) {
        m8 = _mm256_loadu_ps(rmax + 8 * r);
      } else {
        const int64_t end = std::min(cw, a.L0 + i0 + r + 1 - j0);  // causal: keys j < L0 + i + 1
        const __m256 vend = _mm256_set1_ps(static_cast<float>(end));
        for (; j < cw; j += 8) {  // cw may end inside a group: lanes past `end` are masked, never read later
          const __m256 ok = _mm256_and_ps(
              mask8(km + j0 + j),
              _mm256_cmp_ps(_mm256_add_ps(lane, _mm256_set1_ps(static_cast<float>(j))), vend, _CMP_LT_OQ));
          const __m256 x = _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_loadu_ps(s + j), scale), ok);
          _mm256_storeu_ps(s + j, x);
          m8 = _mm256_max_ps(m8, x);
        }
      }
      const float m_old = j0 ? mx[r] : ninf_s;
      const float m_new = std::max(m_old, hmax(m8));  // finite: key 0 (a vision token) is always attendable
      const __m256 vm = _mm256_set1_ps(m_new);
      __m256 s8 = _mm256_setzero_ps();
      if (open) {
        for (j = 0; j < cw; j += 8) {
          const __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
          _mm256_storeu_ps(s + j, p);
          s8 = _mm256_add_ps(s8, p);
        }
      } else {
        for (j = 0; j < cw; j += 8) {
          const __m256 x = _mm256_loadu_ps(s + j);
          const __m256 p = _mm256_and_ps(exp256(_mm256_sub_ps(x, vm)), _mm256_cmp_ps(x, ninf, _CMP_NEQ_OQ));
          _mm256_storeu_ps(s + j, p);
          s8 = _mm256_add_ps(s8, p);
        }
      }
      for (; j < tiles * kPanel; ++j) s[j] = 0.0f;
      if (j0 == 0) {
        sum[r] = hsum(s8);
      } else {
        const float e = std::exp(m_old - m_new);
        sum[r] = hsum(s8) + e * sum[r];
        const __m256 ve = _mm256_set1_ps(e);
        for (int64_t d = 0; d < D; d += 8)
          _mm256_storeu_ps(acc + r * D + d, _mm256_mul_ps(_mm256_loadu_ps(acc + r * D + d), ve));
      }
      mx[r] = m_new;
    }
    if (j0 == 0) {
      gemm(rows, D / kPanel, cw, S, ch, vb, D, kPanel, acc, D);
    } else {
      gemm(rows, D / kPanel, cw, S, ch, vb + j0 * D, D, kPanel, pv, D);
      add_rows(acc, pv, rows * D);
    }
  }
  float* o = a.o + (b * a.nq + (i0 - (a.n - a.nq))) * a.C + h * D;
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 f = _mm256_set1_ps(1.0f / sum[r]);
    for (int64_t d = 0; d < D; d += 8)
      _mm256_storeu_ps(o + r * a.C + d, _mm256_mul_ps(_mm256_loadu_ps(acc + r * D + d), f));
  }
}

struct Workspace {
  std::vector<float> h, a, qkv, o, t, gu, act;
  void reserve(int64_t M, int64_t C, int64_t I) {
    for (auto* v : {&h, &a, &o, &t}) v->resize(M * C);
    qkv.resize(M * 3 * C);
    gu.resize(M * 2 * I);
    act.resize(M * I);
  }
};

}  // namespace

void forward(const Model& m, const Cache& cache, const float* x, const float* cos, const float* sin, int64_t B,
             int64_t n, int64_t L0, float* out, int num_threads) {
  static Workspace ws;  // callers serialise forward passes (the binding holds a lock)
  SpinPool& pool = SpinPool::get();
  pool.ensure(num_threads);
  pool.begin();
  const int64_t C = m.C, H = m.H, D = m.D, I = m.I, C3 = 3 * C, M = B * n, L = m.layers.size();
  const int64_t tiles = cache.cap / kPanel;
  ws.reserve(M, C, I);
  float* h = ws.h.data();
  std::copy(x, x + M * C, h);
  int64_t rows = M;  // residual rows still computed (the last layer keeps one per batch row)
  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& w = m.layers[l];
    float* kp = cache.kp + l * B * H * tiles * D * kPanel;
    float* vc = cache.v + l * B * H * cache.cap * D;
    for (int64_t r = 0; r < M; ++r) rmsnorm(h + r * C, w.ln1, C, m.eps, ws.a.data() + r * C);
    linear_par(pool, M, C, ws.a.data(), C, w.wqkv, C3, ws.qkv.data(), C3);
    for (int64_t r = 0; r < M; ++r) {
      const int64_t b = r / n, j = L0 + r % n;
      float* row = ws.qkv.data() + r * C3;
      for (int64_t hh = 0; hh < 2 * H; ++hh) rope(row + hh * D, cos + r * D, sin + r * D, D);
      for (int64_t hh = 0; hh < H; ++hh) {
        const float* k = row + C + hh * D;
        float* tile = kp + ((b * H + hh) * tiles + j / kPanel) * D * kPanel + j % kPanel;
        for (int64_t d = 0; d < D; ++d) tile[d * kPanel] = k[d];
        std::copy(row + 2 * C + hh * D, row + 2 * C + (hh + 1) * D, vc + ((b * H + hh) * cache.cap + j) * D);
      }
    }
    const bool last = l == L - 1;
    const int64_t nq = last ? 1 : n;
    AttnArgs args{ws.qkv.data(), kp, vc, cache.keymask, ws.o.data(), n, nq, L0, cache.cap, C, H, D,
                  1.0f / std::sqrt(static_cast<float>(D))};
    // balanced blocks (206 queries -> 4 x 52): each block reads keys up to its own last query only (less of the
    // causal triangle), its scores stay in L2, and the items (B * H * blocks) share out evenly over the threads.
    // Blocking changes no value: every row's chunks, maxima, sums and dot products are the same.
    const int64_t qblocks = (nq + kQueryBlock - 1) / kQueryBlock, qb_rows = (nq + qblocks - 1) / qblocks;
    pool.run(B * H * qblocks, [&](int64_t item) {
      const int64_t qb = item % qblocks, bh = item / qblocks, i0 = n - nq + qb * qb_rows;
      if (i0 < n) attention_block(args, bh / H, bh % H, i0, std::min(n, i0 + qb_rows));
    });
    if (last && n > 1) {  // keep only each row's last token from here on
      for (int64_t b = 0; b < B; ++b) std::copy(h + (b * n + n - 1) * C, h + (b * n + n) * C, h + b * C);
      rows = B;
    }
    linear_par(pool, rows, C, ws.o.data(), C, w.wo, C, ws.t.data(), C);
    add_rows(h, ws.t.data(), rows * C);
    for (int64_t r = 0; r < rows; ++r) rmsnorm(h + r * C, w.ln2, C, m.eps, ws.a.data() + r * C);
    linear_par(pool, rows, C, ws.a.data(), C, w.wgu, 2 * I, ws.gu.data(), 2 * I);
    for (int64_t r = 0; r < rows; ++r)
      silu_mul(ws.gu.data() + r * 2 * I, ws.gu.data() + r * 2 * I + I, I, ws.act.data() + r * I);
    linear_par(pool, rows, I, ws.act.data(), I, w.wdown, C, ws.t.data(), C);
    add_rows(h, ws.t.data(), rows * C);
  }
  for (int64_t b = 0; b < B; ++b) rmsnorm(h + b * C, m.norm, C, m.eps, out + b * C);
  pool.end();
}

void heads(const Model& m, const float* h, int64_t M, float* out, int num_threads) {
  SpinPool& pool = SpinPool::get();
  pool.ensure(num_threads);
  pool.begin();
  linear_par(pool, M, m.C, h, m.C, m.heads, m.n_out, out, m.n_out);
  pool.end();
}

int64_t choose(const float* logits, int64_t B, int64_t K, int64_t V, const int64_t* ids, int64_t L, int64_t budget,
               int64_t eos, int64_t* out_ids, float* out_conf) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t n = std::max<int64_t>(0, std::min(K, budget - L));  // the budget ends the step after n choices
  std::vector<float> row(V + 8);
  for (int64_t i = 0; i < B * K * V; ++i)
    if (!std::isfinite(logits[i])) return -1;  // the reference's all-banned-head checks take over
  for (int64_t b = 0; b < B; ++b) {
    std::vector<uint8_t> banned(V, 0);
    for (int64_t j = 0; j < L; ++j)
      if (ids[b * L + j] >= 0 && ids[b * L + j] < V) banned[ids[b * L + j]] = 1;
    if (eos >= 0 && eos < V) banned[eos] = 1;
    for (int64_t i = 0; i < n; ++i) {
      const float* lg = logits + (b * K + i) * V;
      int64_t best = -1;
      float top = ninf;
      for (int64_t v = 0; v < V; ++v) {
        row[v] = banned[v] ? ninf : lg[v];
        if (best < 0 || row[v] > top) best = v, top = row[v];  // strict: the first index wins ties
      }
      if (top == ninf) return -1;  // an all-banned head (unreachable with finite logits below the budget)
      // softmax of this head's final row at its maximum: exp(0) * (1 / sum exp(x - max))
      const __m256 vm = _mm256_set1_ps(top);
      __m256 s8 = _mm256_setzero_ps();
      int64_t v = 0;
      for (; v + 8 <= V; v += 8) s8 = _mm256_add_ps(s8, exp256(_mm256_sub_ps(_mm256_loadu_ps(row.data() + v), vm)));
      float tail[8] = {ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf};
      for (int64_t t = v; t < V; ++t) tail[t - v] = row[t] - top;
      s8 = _mm256_add_ps(s8, exp256(_mm256_loadu_ps(tail)));
      out_ids[b * K + i] = best;
      out_conf[b * K + i] = 1.0f * (1.0f / hsum(s8));
      banned[best] = 1;  // no repeats later in this step
    }
  }
  return n;
}

void linear(const float* x, int64_t M, int64_t K, const float* w_packed, int64_t N, float* out, int num_threads) {
  SpinPool& pool = SpinPool::get();
  pool.ensure(num_threads);
  pool.begin();
  linear_par(pool, M, K, x, K, w_packed, N, out, N);
  pool.end();
}

}  // namespace cpudec
