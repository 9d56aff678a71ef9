/* Attention of packed pairs on CPU: one (pair, head) at a time, in fp32, in L1/L2-sized buffers.
 *
 * Built at first use by pipeline/modeling/kernels/cpu_attention.py (gcc -O3 -march=native
 * -fopenmp) and called through ctypes. For each pair p (tokens cu[p]..cu[p+1]) and query head h:
 *
 *     S = scale * Q K^T   (fp32; causal: key j > query i left out)
 *     P = softmax(S) row by row (fp32)
 *     O = P V             (fp32, rounded once to the output dtype)
 *
 * q/k/v/out are [tokens, heads, dim] views given by their token and head strides (elements); the
 * dim stride is 1. dtype 0 = fp32, 1 = bf16 (bf16 in, fp32 inside, bf16 out, round to nearest
 * even). A query head reads kv head h / (heads / kv_heads) (grouped-query attention).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* e^x for x <= 0 (a softmax's x - max), as 2^n * 2^f with a degree-7 polynomial for 2^f on
 * [-0.5, 0.5]: relative error below 1e-7. Plain C that the compiler vectorizes (no libm call). */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float t = x * 1.44269504088896341f;
    const float n = floorf(t + 0.5f);
    const float f = (t - n) * 0.69314718055994531f;
    float p = 1.0f / 5040.0f + f * (1.0f / 40320.0f);
    p = 1.0f / 720.0f + f * p;
    p = 1.0f / 120.0f + f * p;
    p = 1.0f / 24.0f + f * p;
    p = 1.0f / 6.0f + f * p;
    p = 0.5f + f * p;
    p = 1.0f + f * p;
    p = 1.0f + f * p;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

/* rows [n, dim] of a strided tensor into a dense fp32 buffer (times `mul`) */
static void load_rows(const void *src, int dtype, int64_t row0, int64_t n, int64_t stride_t,
                      int64_t offset, int64_t dim, float mul, float *dst) {
    for (int64_t i = 0; i < n; i++) {
        int64_t at = (row0 + i) * stride_t + offset;
        float *d = dst + i * dim;
        if (dtype == 1) {
            const uint16_t *s = (const uint16_t *)src + at;
            for (int64_t c = 0; c < dim; c++) d[c] = bf16_to_f32(s[c]) * mul;
        } else {
            const float *s = (const float *)src + at;
            for (int64_t c = 0; c < dim; c++) d[c] = s[c] * mul;
        }
    }
}

typedef float v16 __attribute__((vector_size(64)));  /* 16 floats: one AVX-512 register */
#define ROWS 4  /* query rows per step: each K^T / V load feeds four rows */

static inline v16 splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

/* S rows [i0, i0 + 4) = Q K^T over key blocks [0, blocks * 16) (Q already scaled) */
__attribute__((noinline)) static void scores(const float *Q, const float *KT, float *S, int64_t i0, int64_t blocks,
                   int64_t dim, int64_t lp) {
    const float *q0 = Q + i0 * dim, *q1 = q0 + dim, *q2 = q1 + dim, *q3 = q2 + dim;
    float *s0 = S + i0 * lp, *s1 = s0 + lp, *s2 = s1 + lp, *s3 = s2 + lp;
    for (int64_t b = 0; b < blocks * 16; b += 16) {
        v16 a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        const float *kt = KT + b;
        for (int64_t c = 0; c < dim; c++, kt += lp) {
            const v16 k = *(const v16 *)kt;
            a0 += splat(q0[c]) * k;
            a1 += splat(q1[c]) * k;
            a2 += splat(q2[c]) * k;
            a3 += splat(q3[c]) * k;
        }
        *(v16 *)(s0 + b) = a0;
        *(v16 *)(s1 + b) = a1;
        *(v16 *)(s2 + b) = a2;
        *(v16 *)(s3 + b) = a3;
    }
}

/* one row's softmax over its first `keys` scores, left unnormalized (e^(s - max)); returns the
 * factor that normalizes it (1 / sum). The rest of the row up to `width` (a multiple of 16) is
 * set to 0. Every loop runs over whole 16-float blocks: no scalar tail. */
__attribute__((noinline)) static float softmax_row(float *s, int64_t keys, int64_t width) {
    const int64_t whole = (keys + 15) / 16 * 16;
    for (int64_t j = keys; j < whole; j++) s[j] = -INFINITY;
    float top = -INFINITY;
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < whole; j++) top = s[j] > top ? s[j] : top;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < whole; j++) {
        s[j] = exp_nonpositive(s[j] - top);
        sum += s[j];
    }
    for (int64_t j = keys; j < width; j++) s[j] = 0.0f;  /* the -inf tail came out 1e-38, not 0 */
    return 1.0f / sum;
}

static void store_row(const float *row, void *out, int dtype, int64_t at, int64_t n) {
    if (dtype == 1) {
        uint16_t *o = (uint16_t *)out + at;
        for (int64_t c = 0; c < n; c++) o[c] = f32_to_bf16(row[c]);
    } else {
        memcpy((float *)out + at, row, sizeof(float) * (size_t)n);
    }
}

/* O rows [i0, i0 + rows) = P V over keys [0, keys), written to out in its dtype; 16 columns of
 * four rows at a time (P's rows past `rows` are zero), scaled by each row's softmax `norm` */
__attribute__((noinline)) static void weighted_values(const float *S, const float *V, void *out, int dtype, int64_t i0,
                            int64_t rows, int64_t keys, int64_t dim, int64_t lp, int64_t start,
                            int64_t h, const int64_t *os, const float *norm) {
    const float *p0 = S + i0 * lp, *p1 = p0 + lp, *p2 = p1 + lp, *p3 = p2 + lp;
    float row[16];
    for (int64_t d = 0; d < dim; d += 16) {
        v16 a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        const float *vj = V + d;
        for (int64_t j = 0; j < keys; j++, vj += dim) {
            const v16 x = *(const v16 *)vj;
            a0 += splat(p0[j]) * x;
            a1 += splat(p1[j]) * x;
            a2 += splat(p2[j]) * x;
            a3 += splat(p3[j]) * x;
        }
        const v16 acc[ROWS] = {a0, a1, a2, a3};
        for (int64_t r = 0; r < rows; r++) {
            *(v16 *)row = acc[r] * splat(norm[r]);
            store_row(row, out, dtype, (start + i0 + r) * os[0] + h * os[1] + d, 16);
        }
    }
}

static void attend_one(const void *q, const void *k, const void *v, void *out, int dtype,
                       int64_t start, int64_t len, int64_t h, int64_t kvh, int64_t dim,
                       const int64_t *qs, const int64_t *ks, const int64_t *vs, const int64_t *os,
                       float scale, int causal, float *buf) {
    const int64_t lp = (len + 15) / 16 * 16;  /* keys padded to whole 16-float blocks */
    float *Q = buf;                           /* [lp, dim], scaled, zero past len */
    float *V = Q + lp * dim;                  /* [len, dim] */
    float *K = V + lp * dim;                  /* [len, dim], before the transpose */
    float *KT = K + lp * dim;                 /* [dim, lp], zero past len */
    float *S = KT + lp * dim;                 /* [lp, lp] */
    load_rows(q, dtype, start, len, qs[0], h * qs[1], dim, scale, Q);
    memset(Q + len * dim, 0, sizeof(float) * (size_t)((lp - len) * dim));
    load_rows(k, dtype, start, len, ks[0], kvh * ks[1], dim, 1.0f, K);
    load_rows(v, dtype, start, len, vs[0], kvh * vs[1], dim, 1.0f, V);
    for (int64_t c = 0; c < dim; c++) {
        float *row = KT + c * lp;
        for (int64_t j = 0; j < len; j++) row[j] = K[j * dim + c];
        for (int64_t j = len; j < lp; j++) row[j] = 0.0f;
    }
    for (int64_t i0 = 0; i0 < len; i0 += ROWS) {
        const int64_t rows = len - i0 < ROWS ? len - i0 : ROWS;
        const int64_t keys = causal ? i0 + rows : len;  /* the block's widest row */
        scores(Q, KT, S, i0, (keys + 15) / 16, dim, lp);
        const int64_t width = (keys + 15) / 16 * 16;
        float norm[ROWS] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t r = 0; r < ROWS; r++) {  /* rows past len: zero weights, output unused */
            if (r < rows) norm[r] = softmax_row(S + (i0 + r) * lp, causal ? i0 + r + 1 : len, width);
            else memset(S + (i0 + r) * lp, 0, sizeof(float) * (size_t)width);
        }
        weighted_values(S, V, out, dtype, i0, rows, keys, dim, lp, start, h, os, norm);
    }
}

/* 0 on success; 1 if the head width is not a multiple of 16 or above 512, 2 if a thread's buffer
 * could not be allocated (the caller falls back to torch's SDPA either way). */
int rerank_packed_attention(const void *q, const void *k, const void *v, void *out, int dtype,
                            const int64_t *cu, int64_t pairs, int64_t heads, int64_t kv_heads,
                            int64_t dim, const int64_t *q_strides, const int64_t *k_strides,
                            const int64_t *v_strides, const int64_t *out_strides, float scale,
                            int causal, int threads) {
    if (dim > 512 || dim % 16) return 1;
    int64_t longest = 0;
    for (int64_t p = 0; p < pairs; p++)
        if (cu[p + 1] - cu[p] > longest) longest = cu[p + 1] - cu[p];
    const int64_t group = heads / kv_heads;
    const int64_t lp = (longest + 15) / 16 * 16;
    const int64_t floats = 4 * lp * dim + lp * lp;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *buf = (float *)aligned_alloc(64, sizeof(float) * (size_t)((floats + 15) / 16 * 16 + 16));
        if (buf == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t p = 0; p < pairs; p++)
            for (int64_t h = 0; h < heads; h++)
                if (buf != NULL)
                    attend_one(q, k, v, out, dtype, cu[p], cu[p + 1] - cu[p], h, h / group, dim,
                               q_strides, k_strides, v_strides, out_strides, scale, causal, buf);
        free(buf);
    }
    return failed ? 2 : 0;
}
