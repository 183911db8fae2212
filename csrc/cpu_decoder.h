// Fused fp32 CPU forward of the 4-layer gaze decoder over a static KV cache (AVX2 + FMA, a small spin pool).
// Used by triton_autogaze.cpu_fast; the pure-torch reference/decoder.py is its oracle.
#pragma once

#include <cstdint>
#include <vector>

namespace cpudec {

// Weight matrices are "panel-packed": W^T [K, N] (y = x W^T) cut into N/16 panels of 16 columns, each panel
// stored K rows x 16 contiguous floats, i.e. [N/16][K][16]. The GEMM micro-kernel streams one panel at a time.
struct LayerWeights {
  const float* ln1;    // [C]
  const float* wqkv;   // packed, K = C, N = 3C (q | k | v)
  const float* wo;     // packed, K = C, N = C
  const float* ln2;    // [C]
  const float* wgu;    // packed, K = C, N = 2I (gate | up)
  const float* wdown;  // packed, K = I, N = C
};

struct Model {
  int C = 0, H = 0, D = 0, I = 0;  // hidden size, heads, head dim (H * D == C), MLP width
  int n_out = 0;                   // outputs of the packed heads matrix (multiple of 16)
  float eps = 0.0f;                // RMSNorm epsilon
  std::vector<LayerWeights> layers;
  const float* norm = nullptr;   // [C] final RMSNorm weight
  const float* heads = nullptr;  // packed, K = C, N = n_out (lm_head rows, task-loss rows, zero padding)
};

// The KV cache of one batch: rotated keys in 16-key tiles (kp[l][b][h][tile] = D x 16 floats, key-minor, so that
// q.k for 16 keys is one panel of the same GEMM kernel) and values row-major. keymask: attendability bit per key.
struct Cache {
  float* kp;               // [L, B, H, cap / 16, D, 16]
  float* v;                // [L, B, H, cap, D]
  const uint8_t* keymask;  // [B, cap], bits [0, L0 + n) valid
  int64_t batch = 0, cap = 0;
};

// Runs n new tokens per row through every layer: writes their K/V at [L0, L0 + n) and returns the final-normed
// hidden state of the last token of each row. Queries see keys j < L0 + i + 1 with keymask[b, j] set.
// x: [B, n, C] input embeddings; cos, sin: [B, n, D] rotary tables ("rotate half" layout); out: [B, C].
// The last layer computes attention and MLP for the last token only (nothing else reads them).
void forward(const Model& m, const Cache& cache, const float* x, const float* cos, const float* sin, int64_t B,
             int64_t n, int64_t L0, float* out, int num_threads);

// out [M, n_out] = h [M, C] @ heads^T.
void heads(const Model& m, const float* h, int64_t M, float* out, int num_threads);

// The greedy choice of one decode step (reference/generate.py choose_step) for finite logits [B, K, V]: ids
// [B, L] already chosen in this frame are banned on every head, and so is eos; head i takes the first maximum,
// which is then banned on later heads; at most budget - L heads choose. out_ids/out_conf [B, K]: the chosen id
// and its softmax probability among the ids still allowed. Returns the number n of heads that chose, or -1 when
// a logit is not finite or a head has nothing left (the caller falls back to the reference).
int64_t choose(const float* logits, int64_t B, int64_t K, int64_t V, const int64_t* ids, int64_t L, int64_t budget,
               int64_t eos, int64_t* out_ids, float* out_conf);

// out [M, N] = x [M, K] @ W^T with W panel-packed (for tests of the GEMM kernel against torch).
void linear(const float* x, int64_t M, int64_t K, const float* w_packed, int64_t N, float* out, int num_threads);

// True when this CPU has AVX2 and FMA (the kernels need both).
bool supported();

}  // namespace cpudec
