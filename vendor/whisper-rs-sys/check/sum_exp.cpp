// sotto: checks whisper.cpp/src/sotto-logsumexp.h against what it replaces, bit for bit:
// whisper_expf4 against glibc's expf on every float in (-88, 88), and whisper_sum_exp_f32
// and whisper_max_f32 against the release's loops on rows of random logits shaped like
// Whisper's (51,864 of them, some -INFINITY) and on the edge cases.
//
//   g++ -O2 -mavx2 -mfma -mf16c -o /tmp/sum_exp check/sum_exp.cpp && /tmp/sum_exp
//
// (run in vendor/whisper-rs-sys; x86-64 with glibc only; about a minute). Prints the counts
// and exits non-zero on the first difference.

#include "../whisper.cpp/src/sotto-logsumexp.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

// The release's sum (whisper_compute_logprobs before sotto's change), term by term.
static float sum_exp_reference(const float * x, int n, float max) {
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
        if (x[i] > -INFINITY) {
            sum += expf(x[i] - max);
        }
    }
    return sum;
}

static uint32_t bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static float from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

int main() {
    // 1. Every float with |x| < 88, four at a time.
    uint64_t checked = 0;
    for (uint32_t sign = 0; sign < 2; ++sign) {
        for (uint32_t b = 0; b < 0x42b00000u; b += 4) {
            float x[4];
            for (int j = 0; j < 4; ++j) {
                x[j] = from_bits((sign << 31) | (b + j));
            }
            float e[4];
            _mm_storeu_ps(e, whisper_expf4(_mm_loadu_ps(x)));
            for (int j = 0; j < 4; ++j) {
                if (bits(e[j]) != bits(expf(x[j]))) {
                    printf("expf(%a): whisper_expf4 %a, glibc %a\n", x[j], e[j], expf(x[j]));
                    return 1;
                }
            }
            checked += 4;
        }
    }
    printf("whisper_expf4 = expf on %llu floats\n", (unsigned long long) checked);

    // 2. Sums over rows of logits.
    std::mt19937 rng(1234);
    const int n = 51864;
    std::vector<float> row(n);
    int rows = 0;
    for (int r = 0; r < 3000; ++r) {
        // Whisper's logits: mostly within ~30 of each other, a spread that varies, a few
        // standing out, the suppressed ones -INFINITY.
        std::normal_distribution<float> logit(0.0f, 1.0f + (r % 20));
        std::uniform_int_distribution<int> pick(0, n - 1);
        for (auto & l : row) {
            l = logit(rng);
        }
        for (int k = 0; k < r % 50; ++k) {
            row[pick(rng)] += 20.0f + (float) (r % 30);
        }
        for (int k = 0; k < 1600; ++k) {
            row[pick(rng)] = -INFINITY;
        }
        if (r % 7 == 0) {
            std::fill(row.begin() + 50257, row.end(), -INFINITY);
        }
        const int len = n - (r % 9); // lengths that leave a tail after the eight-wide loop
        const float max = *std::max_element(row.begin(), row.begin() + len);
        if (bits(whisper_max_f32(row.data(), len)) != bits(max)) {
            printf("row %d: max %a, std::max_element %a\n", r, whisper_max_f32(row.data(), len), max);
            return 1;
        }
        const float ref = sum_exp_reference(row.data(), len, max);
        const float got = whisper_sum_exp_f32(row.data(), len, max);
        if (bits(ref) != bits(got)) {
            printf("row %d: sum %a, the release's %a\n", r, got, ref);
            return 1;
        }
        rows += 1;
    }

    // 3. Edge cases: every logit -INFINITY (max -INFINITY, d NaN), one +INFINITY, a large
    // spread (terms below 2^-126 and exponents below -88).
    std::vector<std::vector<float>> edges = {
        std::vector<float>(37, -INFINITY),
        {1.0f, INFINITY, 3.0f, -INFINITY, 2.0f, 0.5f, 0.25f, 7.0f, 1.0f},
    };
    std::vector<float> wide(1000);
    for (int i = 0; i < 1000; ++i) {
        wide[i] = -200.0f + 0.2f * (float) ((i * 37) % 1000);
    }
    edges.push_back(wide);
    for (const auto & e : edges) {
        const int len = (int) e.size();
        const float max = *std::max_element(e.begin(), e.end());
        const float ref = sum_exp_reference(e.data(), len, max);
        const float got = whisper_sum_exp_f32(e.data(), len, max);
        if (bits(ref) != bits(got) && !(std::isnan(ref) && std::isnan(got))) {
            printf("edge case of %d: sum %a, the release's %a\n", len, got, ref);
            return 1;
        }
        rows += 1;
    }
    printf("whisper_sum_exp_f32 and whisper_max_f32 = the release's on %d rows\n", rows);
    return 0;
}
