//! Quantized weights and activations, and the dot-product kernels every token runs through.
//!
//! Weights stay in the GGUF's own block formats, 32 weights to a block with an f16 scale:
//! Q8_0 (`w = d·q`, q signed 8-bit), Q4_1 (`w = d·q + m`, q 4-bit) and Q4_0 (`w = d·(q − 8)`).
//! Activations are quantized per block of 32 to 8 bits with an f32 scale `d` and the block's
//! scaled sum `s = d·Σa` ([`ActBlock`], ggml's Q8_1 with f32 fields), so one integer dot
//! product per block serves every weight format:
//!
//! ```text
//! Q8_0: d_w·d_a·Σ q·a
//! Q4_1: d_w·d_a·Σ q·a + m_w·s_a
//! Q4_0: d_w·d_a·Σ q·a − 8·d_w·s_a
//! ```
//!
//! Kernels: AVX2 (sotto's x86-64 floor), with AVX-VNNI's fused u8×i8 dot product where the CPU
//! has it (checked at run time), and a portable version for every other target, which is also
//! the reference the SIMD kernels are tested against. Prefill multiplies many tokens by the
//! same weights, so the kernel works on tiles of 2 weight rows × 4 tokens and unpacks each
//! weight block once for four tokens; decoding one token takes 4 rows at a time.
//!
//! The matrix product writes through a raw pointer ([`OutPtr`]) so that the pool's threads can
//! fill disjoint rows of one output; that is its only `unsafe` contract.

use std::ops::Range;
use std::sync::OnceLock;

use half::f16;

use super::arena::Slice;

/// Weights (and activations) per block.
pub const QK: usize = 32;

/// Weight block formats the kernels run directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    Q4_0,
    Q4_1,
    Q8_0,
}

const F_Q4_0: u8 = 0;
const F_Q4_1: u8 = 1;
const F_Q8_0: u8 = 2;

impl WeightType {
    pub const fn block_bytes(self) -> usize {
        match self {
            WeightType::Q4_0 => 18,
            WeightType::Q4_1 => 20,
            WeightType::Q8_0 => 34,
        }
    }

    /// The GGUF (ggml) type id.
    pub const fn ggml_type(self) -> u32 {
        match self {
            WeightType::Q4_0 => 2,
            WeightType::Q4_1 => 3,
            WeightType::Q8_0 => 8,
        }
    }

    pub fn from_ggml_type(t: u32) -> Option<Self> {
        match t {
            2 => Some(WeightType::Q4_0),
            3 => Some(WeightType::Q4_1),
            8 => Some(WeightType::Q8_0),
            _ => None,
        }
    }
}

/// One block of 32 activations quantized to 8 bits: `a = d·q`, `s = d·Σq`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

/// Quantizes `x` (a multiple of 32 long) into `out`, one block per 32 values.
pub fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in blk.qs.iter_mut().zip(xs) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        blk.d = d;
        blk.s = d * sum as f32;
    }
}

/// Quantizes `x` to Q8_0 weight blocks (used to convert f32/f16 weights at load).
/// Rounds as ggml's reference quantizer does (C's `roundf`: ties away from zero).
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    out.reserve(x.len() / QK * WeightType::Q8_0.block_bytes());
    for xs in x.chunks_exact(QK) {
        // max |v| as `f32::max` would fold it (NaN ignored), in lanes the compiler vectorizes.
        let mut lanes = [0f32; 8];
        for c in xs.chunks_exact(8) {
            for (m, v) in lanes.iter_mut().zip(c) {
                *m = if v.abs() > *m { v.abs() } else { *m };
            }
        }
        let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut rounded = [0f32; QK];
        for (r, &v) in rounded.iter_mut().zip(xs) {
            *r = round_half_away(v * id);
        }
        let mut qs = [0u8; QK];
        for (q, r) in qs.iter_mut().zip(rounded) {
            *q = r as i32 as i8 as u8;
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&qs);
    }
}

/// `v.round()` in a form the compiler vectorizes (`round` itself is a libm call per value).
/// With the lane-wise max above, quantizing Whisper tiny.en's 37 M weights took ~90 ms of
/// perf's samples instead of ~170 ms.
fn round_half_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// A weight matrix of `rows` rows of `cols` weights, row-major, blocks in GGUF layout.
#[derive(Debug)]
pub struct QMatrix {
    pub ty: WeightType,
    pub rows: usize,
    pub cols: usize,
    data: Slice,
}

impl QMatrix {
    pub fn new(ty: WeightType, rows: usize, cols: usize, data: Slice) -> Result<Self, String> {
        if !cols.is_multiple_of(QK) {
            return Err(format!("{cols} columns is not a multiple of {QK}"));
        }
        let want = rows * (cols / QK) * ty.block_bytes();
        if data.len() != want {
            return Err(format!(
                "{ty:?} {rows}×{cols} needs {want} bytes, got {}",
                data.len()
            ));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / QK * self.ty.block_bytes()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` as f32 (the token embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let bytes = self.ty.block_bytes();
        for (blk, o) in self
            .row(r)
            .chunks_exact(bytes)
            .zip(out.chunks_exact_mut(QK))
        {
            let d = f16_at(blk, 0);
            match self.ty {
                WeightType::Q8_0 => {
                    for (o, &q) in o.iter_mut().zip(&blk[2..]) {
                        *o = d * (q as i8) as f32;
                    }
                }
                WeightType::Q4_0 | WeightType::Q4_1 => {
                    let (m, qs) = match self.ty {
                        WeightType::Q4_1 => (f16_at(blk, 2), &blk[4..]),
                        _ => (-8.0 * d, &blk[2..]),
                    };
                    for (j, &q) in qs.iter().enumerate() {
                        o[j] = d * (q & 0x0F) as f32 + m;
                        o[j + QK / 2] = d * (q >> 4) as f32 + m;
                    }
                }
            }
        }
    }
}

/// The instruction set the kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// The same 256-bit VNNI instruction in its AVX-512 form (AVX512-VNNI with AVX512-VL):
    /// Intel's server cores since Cascade Lake and AMD's since Zen 4, which lack AVX-VNNI.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Isa {
    /// The best the CPU has (detected once).
    pub fn best() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                if avx2 && is_x86_feature_detected!("avxvnni") {
                    return Isa::AvxVnni;
                }
                if avx2 && has_avx512_vnni() {
                    return Isa::Avx512Vnni;
                }
                if avx2 {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// Every instruction set this CPU can run (for tests and benches).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::best() != Isa::Portable {
                v.push(Isa::Avx2);
                if is_x86_feature_detected!("avxvnni") {
                    v.push(Isa::AvxVnni);
                }
                if has_avx512_vnni() {
                    v.push(Isa::Avx512Vnni);
                }
            }
        }
        v
    }
}

/// Whether the CPU has VNNI's 256-bit form in AVX-512 (AVX512-VNNI with AVX512-VL).
#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
}

/// Where a matrix product writes: `n_tok` rows of `stride` floats.
#[derive(Clone, Copy)]
pub struct OutPtr {
    ptr: *mut f32,
    stride: usize,
    len: usize,
}

// SAFETY: an `OutPtr` is only used by `matmul_rows`, whose contract is that concurrent calls
// write disjoint cells; the buffer outlives the pool run that uses it (the caller borrows it
// mutably for the whole run).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub fn new(out: &mut [f32], stride: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            stride,
            len: out.len(),
        }
    }

    /// Writes `v` to row `t`, column `r`; panics outside the buffer.
    ///
    /// # Safety
    /// No other thread reads or writes cell (t, r) at the same time.
    #[inline(always)]
    pub unsafe fn write_at(&self, t: usize, r: usize, v: f32) {
        let i = t * self.stride + r;
        assert!(i < self.len && r < self.stride);
        // SAFETY: in bounds (checked above); exclusive per the function's contract.
        unsafe { *self.ptr.add(i) = v };
    }
}

/// Walks the rows × tokens in tiles and calls `$m::tile::<F, R, T>` on each.
macro_rules! drive {
    ($m:path, $f:expr, $base:expr, $rb:expr, $x:expr, $bpr:expr, $rows:expr, $n_tok:expr, $out:expr) => {{
        use $m as k;
        let (base, rb, x, bpr, out) = ($base, $rb, $x.as_ptr(), $bpr, $out);
        let mut r = $rows.start;
        let end = $rows.end;
        macro_rules! put {
            ($R:literal, $T:literal, $t:expr) => {{
                // The next rows are fetched ahead once per row group, on its first tokens.
                let res =
                    k::tile::<{ $f }, $R, $T>(base.add(r * rb), rb, x.add($t * bpr), bpr, $t == 0);
                for (i, row) in res.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        out.write_at($t + j, r + i, *v);
                    }
                }
            }};
        }
        if $n_tok == 1 {
            while r + 4 <= end {
                put!(4, 1, 0);
                r += 4;
            }
            while r < end {
                put!(1, 1, 0);
                r += 1;
            }
        } else {
            while r < end {
                let two = r + 2 <= end;
                let mut t = 0;
                while t + 4 <= $n_tok {
                    if two {
                        put!(2, 4, t)
                    } else {
                        put!(1, 4, t)
                    }
                    t += 4;
                }
                match ($n_tok - t, two) {
                    (1, true) => put!(2, 1, t),
                    (2, true) => put!(2, 2, t),
                    (3, true) => put!(2, 3, t),
                    (1, false) => put!(1, 1, t),
                    (2, false) => put!(1, 2, t),
                    (3, false) => put!(1, 3, t),
                    _ => {}
                }
                r += if two { 2 } else { 1 };
            }
        }
    }};
}

/// `out[t][r] = row r of w · token t of x` for every row in `rows` and every token; `x` holds
/// `n_tok` tokens of `w.cols / 32` blocks each.
///
/// # Safety
/// Calls running at the same time on the same `out` must be given disjoint `rows`.
pub unsafe fn matmul_rows(
    isa: Isa,
    w: &QMatrix,
    rows: Range<usize>,
    x: &[ActBlock],
    n_tok: usize,
    out: OutPtr,
) {
    let bpr = w.cols / QK;
    assert!(
        x.len() >= n_tok * bpr,
        "activations shorter than the tokens"
    );
    assert!(rows.end <= w.rows, "rows beyond the matrix");
    let rb = w.row_bytes();
    let base = w.data.as_ptr();
    // SAFETY (for every kernel below): rows < w.rows and tokens < n_tok, so every block read
    // lies inside `w.data` and `x` (checked above); writes go through `out` per the contract.
    unsafe {
        match isa {
            Isa::Portable => match w.ty {
                WeightType::Q4_0 => drive!(portable, F_Q4_0, base, rb, x, bpr, rows, n_tok, out),
                WeightType::Q4_1 => drive!(portable, F_Q4_1, base, rb, x, bpr, rows, n_tok, out),
                WeightType::Q8_0 => drive!(portable, F_Q8_0, base, rb, x, bpr, rows, n_tok, out),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => match w.ty {
                WeightType::Q4_0 => drive!(x86::avx2, F_Q4_0, base, rb, x, bpr, rows, n_tok, out),
                WeightType::Q4_1 => drive!(x86::avx2, F_Q4_1, base, rb, x, bpr, rows, n_tok, out),
                WeightType::Q8_0 => drive!(x86::avx2, F_Q8_0, base, rb, x, bpr, rows, n_tok, out),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => match w.ty {
                WeightType::Q4_0 => drive!(x86::vnni, F_Q4_0, base, rb, x, bpr, rows, n_tok, out),
                WeightType::Q4_1 => drive!(x86::vnni, F_Q4_1, base, rb, x, bpr, rows, n_tok, out),
                WeightType::Q8_0 => drive!(x86::vnni, F_Q8_0, base, rb, x, bpr, rows, n_tok, out),
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => match w.ty {
                WeightType::Q4_0 => {
                    drive!(x86::vnni512, F_Q4_0, base, rb, x, bpr, rows, n_tok, out)
                }
                WeightType::Q4_1 => {
                    drive!(x86::vnni512, F_Q4_1, base, rb, x, bpr, rows, n_tok, out)
                }
                WeightType::Q8_0 => {
                    drive!(x86::vnni512, F_Q8_0, base, rb, x, bpr, rows, n_tok, out)
                }
            },
        }
    }
}

/// Portable kernels: plain integer loops (the reference, and the path on non-x86 targets).
mod portable {
    use super::*;

    /// Integer dot product of one weight block with one activation block, with the block's
    /// weight scale and offset term.
    #[inline(always)]
    fn block<const F: u8>(w: &[u8], a: &ActBlock) -> (i32, f32, f32) {
        let d = f16_at(w, 0);
        match F {
            F_Q8_0 => {
                let dot = w[2..34]
                    .iter()
                    .zip(&a.qs)
                    .map(|(&q, &x)| (q as i8) as i32 * x as i32)
                    .sum();
                (dot, d, 0.0)
            }
            _ => {
                let (m, qs) = if F == F_Q4_1 {
                    (f16_at(w, 2), &w[4..20])
                } else {
                    (-8.0 * d, &w[2..18])
                };
                let mut dot = 0i32;
                for (j, &q) in qs.iter().enumerate() {
                    dot += (q & 0x0F) as i32 * a.qs[j] as i32;
                    dot += (q >> 4) as i32 * a.qs[j + QK / 2] as i32;
                }
                (dot, d, m)
            }
        }
    }

    /// # Safety
    /// `w` points at R rows of `rb` bytes, `x` at T tokens of `bpr` blocks.
    pub unsafe fn tile<const F: u8, const R: usize, const T: usize>(
        w: *const u8,
        rb: usize,
        x: *const ActBlock,
        bpr: usize,
        _prefetch: bool,
    ) -> [[f32; T]; R] {
        let bytes = rb / bpr;
        let mut out = [[0f32; T]; R];
        for (r, row_out) in out.iter_mut().enumerate() {
            // SAFETY: per the function's contract.
            let row = unsafe { std::slice::from_raw_parts(w.add(r * rb), rb) };
            for (t, o) in row_out.iter_mut().enumerate() {
                // SAFETY: per the function's contract.
                let acts = unsafe { std::slice::from_raw_parts(x.add(t * bpr), bpr) };
                let mut sum = 0f32;
                for (blk, a) in row.chunks_exact(bytes).zip(acts) {
                    let (dot, d, m) = block::<F>(blk, a);
                    sum += d * a.d * dot as f32 + m * a.s;
                }
                *o = sum;
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn f16_to_f32(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// One weight block: the unsigned bytes to multiply, the raw signed bytes (Q8_0: whose
    /// signs move onto the activations), its scale and offset.
    ///
    /// # Safety
    /// `b` points at one whole block of format F.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load<const F: u8>(b: *const u8) -> (__m256i, __m256i, f32, f32) {
        // SAFETY: per the function's contract, every read is inside the block.
        unsafe {
            let d = f16_to_f32((b as *const u16).read_unaligned());
            match F {
                F_Q8_0 => {
                    let raw = _mm256_loadu_si256(b.add(2) as *const __m256i);
                    (_mm256_sign_epi8(raw, raw), raw, d, 0.0)
                }
                _ => {
                    let (m, qs) = if F == F_Q4_1 {
                        (
                            f16_to_f32((b.add(2) as *const u16).read_unaligned()),
                            b.add(4),
                        )
                    } else {
                        (-8.0 * d, b.add(2))
                    };
                    let lo = _mm_loadu_si128(qs as *const __m128i);
                    let both = _mm256_set_m128i(_mm_srli_epi16(lo, 4), lo);
                    let u = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
                    (u, u, d, m)
                }
            }
        }
    }

    macro_rules! tile_kernel {
        ($features:literal, $dot:ident) => {
            /// # Safety
            /// `w` points at R rows of `rb` bytes, `x` at T tokens of `bpr` blocks.
            #[target_feature(enable = $features)]
            pub unsafe fn tile<const F: u8, const R: usize, const T: usize>(
                w: *const u8,
                rb: usize,
                x: *const ActBlock,
                bpr: usize,
                prefetch: bool,
            ) -> [[f32; T]; R] {
                let bytes = rb / bpr;
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                let mut corr = [[0f32; T]; R];
                // The next tile's rows follow these in memory; rows are short (a few hundred
                // bytes), too short for the hardware prefetcher to ramp up on, so fetch them
                // while this tile computes: a share of the next tile's lines per block.
                let next = w.wrapping_add(R * rb);
                let lines_per_block = if prefetch {
                    (R * rb).div_ceil(64).div_ceil(bpr)
                } else {
                    0
                };
                for b in 0..bpr {
                    for l in 0..lines_per_block {
                        _mm_prefetch::<_MM_HINT_T0>(
                            next.wrapping_add((b * lines_per_block + l) * 64) as *const i8,
                        );
                    }
                    for r in 0..R {
                        // SAFETY: per the function's contract.
                        let (u, raw, dw, mw) = unsafe { load::<F>(w.add(r * rb + b * bytes)) };
                        for t in 0..T {
                            // SAFETY: per the function's contract.
                            let a = unsafe { &*x.add(t * bpr + b) };
                            // SAFETY: `qs` is 32 bytes.
                            let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i) };
                            let av = if F == F_Q8_0 {
                                _mm256_sign_epi8(av, raw)
                            } else {
                                av
                            };
                            let p = $dot(u, av);
                            acc[r][t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(p),
                                _mm256_set1_ps(dw * a.d),
                                acc[r][t],
                            );
                            if F != F_Q8_0 {
                                corr[r][t] += mw * a.s;
                            }
                        }
                    }
                }
                let mut out = [[0f32; T]; R];
                for r in 0..R {
                    for t in 0..T {
                        out[r][t] = hsum(acc[r][t]) + corr[r][t];
                    }
                }
                out
            }
        };
    }

    /// u8 × i8 → eight i32 sums of four products.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot_avx2(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    #[inline]
    fn dot_vnni(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
    }

    pub mod avx2 {
        use super::*;
        tile_kernel!("avx2,fma,f16c", dot_avx2);
    }

    pub mod vnni {
        use super::*;
        tile_kernel!("avx2,fma,f16c,avxvnni", dot_vnni);
    }

    /// u8 × i8 → eight i32 sums of four products, in AVX-512 VNNI's 256-bit form.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    #[inline]
    fn dot_vnni512(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }

    pub mod vnni512 {
        use super::*;
        tile_kernel!("avx2,fma,f16c,avx512vnni,avx512vl", dot_vnni512);
    }

    /// Σ a·b with `b` in f16.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n ≤ both lengths.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i)),
                )
            };
            acc = _mm256_fmadd_ps(x, y, acc);
            i += 8;
        }
        let mut s = hsum(acc);
        for j in i..n {
            s += a[j] * b[j].to_f32();
        }
        s
    }

    /// y += a·x with `x` in f16.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
        let n = y.len().min(x.len());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n ≤ both lengths.
            unsafe {
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
                let yv = _mm256_loadu_ps(y.as_ptr().add(i));
                _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_fmadd_ps(av, xv, yv));
            }
            i += 8;
        }
        for j in i..n {
            y[j] += a * x[j].to_f32();
        }
    }
}

/// Σ a·b, `b` in f16 (attention scores against the f16 key cache).
pub fn dot_f16(isa: Isa, a: &[f32], b: &[f16]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is only AVX2 or better when the CPU has AVX2, FMA and F16C.
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => unsafe { x86::dot_f16(a, b) },
        _ => a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum(),
    }
}

/// y += a·x, `x` in f16 (attention's weighted sum of the f16 value cache).
pub fn axpy_f16(isa: Isa, y: &mut [f32], a: f32, x: &[f16]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f16`.
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => unsafe { x86::axpy_f16(y, a, x) },
        _ => {
            for (y, x) in y.iter_mut().zip(x) {
                *y += a * x.to_f32();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn byte(&mut self) -> u8 {
            (self.next().to_bits() >> 7) as u8
        }
    }

    fn random_matrix(ty: WeightType, rows: usize, cols: usize, rng: &mut Lcg) -> QMatrix {
        let mut data = Vec::new();
        for _ in 0..rows * cols / QK {
            let d = f16::from_f32(0.01 + 0.02 * rng.next().abs());
            data.extend_from_slice(&d.to_le_bytes());
            if ty == WeightType::Q4_1 {
                data.extend_from_slice(&f16::from_f32(-0.1 * rng.next().abs()).to_le_bytes());
            }
            let header = if ty == WeightType::Q4_1 { 4 } else { 2 };
            for _ in header..ty.block_bytes() {
                data.push(rng.byte());
            }
        }
        QMatrix::new(ty, rows, cols, Slice::from_vec(data)).unwrap()
    }

    #[test]
    fn q8_0_rounds_ties_away_from_zero_as_roundf() {
        let mut rng = Lcg(7);
        let mut values: Vec<f32> = (0..100_000).map(|_| rng.next() * 130.0).collect();
        for k in -128..=128 {
            let t = k as f32 + 0.5;
            values.extend([t, t.next_down(), t.next_up(), k as f32]);
        }
        values.extend([0.49999997, -0.49999997, 8_388_607.5, -8_388_608.0]);
        for v in values {
            assert_eq!(round_half_away(v), v.round(), "{v}");
        }
    }

    #[test]
    fn every_kernel_matches_the_dequantized_product_for_every_tile_shape() {
        let mut rng = Lcg(7);
        for ty in [WeightType::Q4_0, WeightType::Q4_1, WeightType::Q8_0] {
            let (rows, cols) = (11, 96);
            let w = random_matrix(ty, rows, cols, &mut rng);
            for n_tok in [1, 2, 3, 4, 5, 7, 9] {
                let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.next()).collect();
                let mut act = vec![ActBlock::default(); n_tok * cols / QK];
                quantize_row(&x, &mut act);
                // Reference: dequantized weights against dequantized activations, in f64.
                let mut want = vec![0f64; n_tok * rows];
                let mut wrow = vec![0f32; cols];
                for r in 0..rows {
                    w.dequantize_row(r, &mut wrow);
                    for t in 0..n_tok {
                        let a = &act[t * cols / QK..(t + 1) * cols / QK];
                        want[t * rows + r] = (0..cols)
                            .map(|i| {
                                wrow[i] as f64 * (a[i / QK].d * a[i / QK].qs[i % QK] as f32) as f64
                            })
                            .sum();
                    }
                }
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; n_tok * rows];
                    // Two calls on disjoint row ranges, as the pool makes them.
                    let out = OutPtr::new(&mut got, rows);
                    unsafe {
                        matmul_rows(isa, &w, 0..5, &act, n_tok, out);
                        matmul_rows(isa, &w, 5..rows, &act, n_tok, out);
                    }
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (*g as f64 - w).abs() < 1e-3 * (1.0 + w.abs()),
                            "{isa:?} {ty:?} n_tok {n_tok} cell {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activation_quantization_keeps_values_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let mut act = vec![ActBlock::default(); 2];
        quantize_row(&x, &mut act);
        for (i, v) in x.iter().enumerate() {
            let a = &act[i / QK];
            assert!((a.d * a.qs[i % QK] as f32 - v).abs() <= a.d * 0.5 + 1e-6);
        }
        let sum: i32 = act[0].qs.iter().map(|&q| q as i32).sum();
        assert!((act[0].s - act[0].d * sum as f32).abs() < 1e-4);
        // All zeros stays finite.
        let mut z = vec![ActBlock::default(); 1];
        quantize_row(&[0.0; 32], &mut z);
        assert_eq!(z[0].d, 0.0);
        assert!(z[0].qs.iter().all(|&q| q == 0));
    }

    #[test]
    fn f16_attention_helpers_agree_across_instruction_sets() {
        let a: Vec<f32> = (0..67).map(|i| (i as f32 * 0.1).sin()).collect();
        let b: Vec<f16> = (0..67)
            .map(|i| f16::from_f32((i as f32 * 0.3).cos()))
            .collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y.to_f32()).sum();
        for isa in Isa::available() {
            assert!((dot_f16(isa, &a, &b) - want).abs() < 1e-4);
            let mut y = a.clone();
            axpy_f16(isa, &mut y, 0.5, &b);
            for i in 0..67 {
                assert!((y[i] - (a[i] + 0.5 * b[i].to_f32())).abs() < 1e-5);
            }
        }
    }
}
