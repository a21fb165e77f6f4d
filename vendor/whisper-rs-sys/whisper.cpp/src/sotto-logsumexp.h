// sotto: the maximum and the sum of exponentials of a row of logits, as whisper.cpp's
// whisper_compute_logprobs computed them (std::max_element, then expf(x[i] - max) added in
// index order), with the same bits and less work. Beam search computes both over all 51,864
// logits, per beam and per decoded token.
//
// - whisper_max_f32: eight at a time (logits are never NaN, so the maximum is the same value).
// - whisper_sum_exp_f32: a term that cannot change the sum is not computed. Once the sum is s,
//   a term below half of s's unit in the last place rounds away (s + x is nearer to s than to
//   the next float up), and expf(d) is below that when d < ln(ulp(s)/2), less a margin for
//   expf's own error. The terms that can count are found eight at a time, their exponentials
//   computed four at a time with glibc's expf algorithm in double precision (the FMA build,
//   `__expf_fma`, which glibc picks on every CPU this code is compiled for: -mfma), and
//   added one by one in index order as before.
//
// `check/sum_exp.cpp` (beside whisper.cpp/) compares whisper_expf4 with expf on every float in
// (-88, 88) and the sum with the release's loop on random rows; rerun it when changing this file.

#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX2__) && defined(__FMA__)
// glibc's __exp2f_data for EXP2F_TABLE_BITS = 5 (sysdeps/ieee754/flt-32/e_exp2f_data.c, from
// Arm's optimized-routines): tab[i] = bits of 2^(i/32) - (i << 47), then the scaled 1/ln 2,
// the polynomial and the rounding shift, as the library holds them.
static const uint64_t whisper_exp2f_tab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};
static const uint64_t whisper_expf_invln2n = 0x40471547652b82fe; // 32 / ln 2
static const uint64_t whisper_expf_c0 = 0x3ebc6af84b912394;
static const uint64_t whisper_expf_c1 = 0x3f2ebfce50fac4f3;
static const uint64_t whisper_expf_c2 = 0x3f962e42ff0c52d6;
static const uint64_t whisper_expf_shift = 0x4338000000000000; // 0x1.8p52

static inline __m256d whisper_pd(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    return _mm256_set1_pd(d);
}

// expf of four floats with |x| < 88 (glibc handles larger ones apart), the same operations in
// the same order as glibc's __expf_fma: k = round(x * 32/ln 2), r the remainder,
// 2^(k/32) from the table and 2^(r/32) from a cubic.
static inline __m128 whisper_expf4(__m128 x) {
    const __m256d xd = _mm256_cvtps_pd(x);
    const __m256d invln2n = whisper_pd(whisper_expf_invln2n);
    const __m256d shift = whisper_pd(whisper_expf_shift);
    const __m256d kd_shifted = _mm256_fmadd_pd(invln2n, xd, shift);
    const __m256i ki = _mm256_castpd_si256(kd_shifted);
    const __m256d kd = _mm256_sub_pd(kd_shifted, shift);
    const __m256d r = _mm256_fmsub_pd(invln2n, xd, kd);
    // four loads, not a gather instruction: gathers are slow on many x86 CPUs (microcode
    // mitigations for Gather Data Sampling made them slower still)
    alignas(32) uint64_t k[4];
    _mm256_store_si256((__m256i *) k, ki);
    const __m256i tab = _mm256_set_epi64x(
        (long long) whisper_exp2f_tab[k[3] & 31], (long long) whisper_exp2f_tab[k[2] & 31],
        (long long) whisper_exp2f_tab[k[1] & 31], (long long) whisper_exp2f_tab[k[0] & 31]);
    const __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(tab, _mm256_slli_epi64(ki, 47)));
    const __m256d z = _mm256_fmadd_pd(r, whisper_pd(whisper_expf_c0), whisper_pd(whisper_expf_c1));
    const __m256d r2 = _mm256_mul_pd(r, r);
    const __m256d y0 = _mm256_fmadd_pd(r, whisper_pd(whisper_expf_c2), _mm256_set1_pd(1.0));
    const __m256d y = _mm256_mul_pd(_mm256_fmadd_pd(z, r2, y0), s);
    return _mm256_cvtpd_ps(y);
}
#endif

// The largest of x[0..n), the value std::max_element finds when no x[i] is NaN.
static inline float whisper_max_f32(const float * x, int n) {
    float m = -INFINITY;
    int i = 0;
#if defined(__AVX2__)
    __m256 v = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) {
        v = _mm256_max_ps(v, _mm256_loadu_ps(x + i));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    for (float l : lanes) {
        m = l > m ? l : m;
    }
#endif
    for (; i < n; ++i) {
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

// The same sum, with the same bits (see the top of this file).
static inline float whisper_sum_exp_f32(const float * x, int n, float max) {
    float sum = 0.0f;
    // Terms with x[i] - max below `cut` leave `sum` unchanged (-INFINITY: every term counts).
    float cut = -INFINITY;
    // Adds the term of x[i], whose exponential is `e` (computed already) or, for NaN, `e`
    // unused and expf called, as the release did.
    auto add = [&](float xi, float d, float e) {
        if (xi > -INFINITY && !(d < cut)) {
            sum += e;
            uint32_t bits;
            memcpy(&bits, &sum, sizeof bits);
            const int biased = (bits >> 23) & 0xff;
            if (biased != 0 && biased != 0xff) {
                // sum in [2^E, 2^(E+1)), E = biased - 127: half its ulp is 2^(E-24)
                cut = (float) (biased - 151) * 0.69314718f - 0.01f;
            }
        }
    };
    int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 vmax = _mm256_set1_ps(max);
    const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (; i + 8 <= n; i += 8) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vmax);
        // d >= cut, or d NaN (every logit -INFINITY); -INFINITY logits are dropped by `add`
        const int keep = _mm256_movemask_ps(_mm256_cmp_ps(d, _mm256_set1_ps(cut), _CMP_GE_OQ)) |
                         _mm256_movemask_ps(_mm256_cmp_ps(d, d, _CMP_UNORD_Q));
        if (keep == 0) {
            continue;
        }
        alignas(32) float ds[8];
        alignas(32) float es[8];
        _mm256_store_ps(ds, d);
        _mm_store_ps(es, whisper_expf4(_mm256_castps256_ps128(d)));
        _mm_store_ps(es + 4, whisper_expf4(_mm256_extractf128_ps(d, 1)));
        // |d| >= 88, infinities and NaN: glibc's special cases, through expf itself
        const int special = _mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_and_ps(d, vabs), _mm256_set1_ps(88.0f), _CMP_NLT_UQ));
        for (int m = keep; m != 0; m &= m - 1) {
            const int lane = __builtin_ctz(m);
            const float e = (special >> lane) & 1 ? expf(ds[lane]) : es[lane];
            add(x[i + lane], ds[lane], e);
        }
    }
#endif
    for (; i < n; ++i) {
        const float d = x[i] - max;
        if (x[i] > -INFINITY && !(d < cut)) {
            add(x[i], d, expf(d));
        }
    }
    return sum;
}
