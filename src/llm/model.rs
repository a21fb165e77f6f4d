//! The llama architecture's forward pass over quantized GGUF weights, with its KV cache.
//!
//! [`Model`] owns the weights (in their GGUF block formats, see [`super::quant`]), the key/value
//! cache (f16, grown as the conversation grows, truncatable to any earlier length) and the
//! thread pool its matrix products run on. It is used from one thread, the one that owns the
//! LLM. [`Model::forward`] runs a batch of tokens at the positions after what is cached and
//! returns the logits of the last one (or of every one, for perplexity).
//!
//! Per layer: RMS norm → Q, K, V (one pool run over the three matrices) → rotary position
//! embedding (GGUF llama convention: adjacent pairs) → attention over the cache with grouped
//! query heads → output projection → residual; RMS norm → gate and up (one pool run) → SiLU ·
//! up → down → residual. Activations are quantized to 8 bits once per matrix product input.
//!
//! Weight formats: Q4_0, Q4_1 and Q8_0 run as stored; F32, F16 and BF16 tensors are converted to
//! Q8_0 at load. Anything else is an error naming the tensor and its type.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::f16;

use std::sync::Arc;

use super::arena::{Arena, Slice};
use super::pool::Pool;
use super::quant::{self, ActBlock, Isa, OutPtr, QK, QMatrix, WeightType};
use crate::models::gguf::{Header, TensorInfo};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(
        "{path}: architecture {arch:?} is not one sotto can run (it runs llama-architecture models)"
    )]
    Architecture { path: PathBuf, arch: String },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Hyper-parameters from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct Config {
    pub n_layer: usize,
    pub dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
}

impl Config {
    fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
    /// Keys and values of every cached position: `[position][kv_dim]`.
    k: Vec<f16>,
    v: Vec<f16>,
}

/// Work buffers, kept between calls so decoding allocates nothing per token.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    act: Vec<ActBlock>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    ffn_act: Vec<ActBlock>,
    logits: Vec<f32>,
    rope: Vec<(f32, f32)>,
}

fn fit<T: Clone + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Which logits [`Model::forward`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

pub struct Model {
    pub config: Config,
    embed: QMatrix,
    /// None: the output projection is the token embedding (tied weights).
    output: Option<QMatrix>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// Positions in the KV cache.
    len: usize,
    inv_freq: Vec<f32>,
    pool: Pool,
    isa: Isa,
    scratch: Scratch,
}

impl Model {
    /// Loads a llama-architecture GGUF. `threads`: threads for the matrix products.
    pub fn load(path: &Path, header: &Header, threads: usize) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let arch = header.get_str("general.architecture").unwrap_or("");
        if arch != "llama" {
            return Err(ModelError::Architecture {
                path: path.to_path_buf(),
                arch: arch.to_string(),
            });
        }
        let num = |key: &str| -> Result<usize, ModelError> {
            header
                .get(&format!("llama.{key}"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("metadata llama.{key} is missing")))
        };
        let float = |key: &str, default: f32| -> f32 {
            match header.get(&format!("llama.{key}")) {
                Some(crate::models::gguf::Value::F32(v)) => *v,
                Some(crate::models::gguf::Value::F64(v)) => *v as f32,
                _ => default,
            }
        };
        let dim = num("embedding_length")?;
        let n_head = num("attention.head_count")?;
        let n_kv_head = num("attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || dim % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(bad(format!(
                "{n_head} heads, {n_kv_head} key/value heads and width {dim} do not fit together"
            )));
        }
        let head_dim = dim / n_head;
        if head_dim % 2 != 0 {
            return Err(bad(format!("head size {head_dim} is odd")));
        }
        let rope_dim = num("rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(bad(format!(
                "rotary embedding over {rope_dim} of {head_dim} dimensions is not supported"
            )));
        }
        let embed_info = tensor(header, "token_embd.weight")
            .ok_or_else(|| bad("no token_embd.weight".into()))?;
        let vocab = embed_info.dims.get(1).copied().unwrap_or(0) as usize;
        let config = Config {
            n_layer: num("block_count")?,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim: num("feed_forward_length")?,
            vocab,
            context: num("context_length").unwrap_or(2048),
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base: float("rope.freq_base", 10_000.0),
        };
        let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = TensorReader {
            path,
            file: &mut file,
            header,
        };
        let kv = config.kv_dim();
        // Every matrix goes into one arena (huge pages: see `arena`): plan, allocate, fill.
        let mut shapes = Vec::new();
        for i in 0..config.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            shapes.extend([
                (name("attn_q"), dim, dim),
                (name("attn_k"), kv, dim),
                (name("attn_v"), kv, dim),
                (name("attn_output"), dim, dim),
                (name("ffn_gate"), config.ffn_dim, dim),
                (name("ffn_up"), config.ffn_dim, dim),
                (name("ffn_down"), dim, config.ffn_dim),
            ]);
        }
        shapes.push(("token_embd.weight".into(), vocab, dim));
        let tied = tensor(header, "output.weight").is_none();
        if !tied {
            shapes.push(("output.weight".into(), vocab, dim));
        }
        let plans = shapes
            .iter()
            .map(|(name, rows, cols)| reader.plan(name, *rows, *cols))
            .collect::<Result<Vec<_>, _>>()?;
        let total = plans.iter().map(|p| p.bytes).sum();
        let mut arena = Arena::new(total);
        let mut at = 0;
        for p in &plans {
            reader.fill(p, &mut arena[at..at + p.bytes])?;
            at += p.bytes;
        }
        let arena = Arc::new(arena);
        let mut at = 0;
        let mut matrices = plans.into_iter().map(|p| {
            let m = QMatrix::new(p.ty, p.rows, p.cols, Slice::new(arena.clone(), at, p.bytes));
            at += p.bytes;
            m.map_err(|e| ModelError::Format {
                path: path.to_path_buf(),
                reason: format!("{}: {e}", p.name),
            })
        });
        let mut next = || matrices.next().expect("one matrix per planned shape");
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            layers.push(Layer {
                attn_norm: reader.vector(&name("attn_norm"), dim)?,
                wq: next()?,
                wk: next()?,
                wv: next()?,
                wo: next()?,
                ffn_norm: reader.vector(&name("ffn_norm"), dim)?,
                gate: next()?,
                up: next()?,
                down: next()?,
                k: Vec::new(),
                v: Vec::new(),
            });
        }
        let embed = next()?;
        let output = if tied { None } else { Some(next()?) };
        let out_norm = reader.vector("output_norm.weight", dim)?;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / config.rope_base.powf(2.0 * i as f32 / head_dim as f32))
            .collect();
        Ok(Self {
            config,
            embed,
            output,
            out_norm,
            layers,
            len: 0,
            inv_freq,
            pool: Pool::new(threads),
            isa: Isa::best(),
            scratch: Scratch::default(),
        })
    }

    /// Positions held in the KV cache.
    pub fn cached(&self) -> usize {
        self.len
    }

    /// Forgets every cached position from `len` on (0: the whole cache).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        let kv = self.config.kv_dim();
        for l in &mut self.layers {
            l.k.truncate(self.len * kv);
            l.v.truncate(self.len * kv);
        }
    }

    /// Bytes of weights held (what the model owns, besides the cache).
    pub fn weight_bytes(&self) -> usize {
        let m = |q: &QMatrix| q.bytes();
        self.layers
            .iter()
            .map(|l| m(&l.wq) + m(&l.wk) + m(&l.wv) + m(&l.wo) + m(&l.gate) + m(&l.up) + m(&l.down))
            .sum::<usize>()
            + m(&self.embed)
            + self.output.as_ref().map(m).unwrap_or(0)
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `tokens` at the positions after the cache, appends them to the cache, and returns
    /// the logits of the last token (`Logits::Last`: `vocab` floats) or of every token
    /// (`Logits::All`: `tokens.len() × vocab`).
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> &[f32] {
        let c = self.config.clone();
        let n = tokens.len();
        let start = self.len;
        assert!(n > 0, "forward of no tokens");
        assert!(start + n <= c.context, "past the context window");
        let (dim, kv, hd) = (c.dim, c.kv_dim(), c.head_dim);
        let isa = self.isa;
        let s = &mut self.scratch;

        let x = fit(&mut s.x, n * dim);
        for (t, &tok) in tokens.iter().enumerate() {
            let id = (tok as usize).min(c.vocab - 1);
            self.embed
                .dequantize_row(id, &mut x[t * dim..(t + 1) * dim]);
        }
        let rope = fit(&mut s.rope, n * hd / 2);
        for t in 0..n {
            let p = (start + t) as f32;
            for (i, f) in self.inv_freq.iter().enumerate() {
                let (sin, cos) = (p * f).sin_cos();
                rope[t * hd / 2 + i] = (cos, sin);
            }
        }

        for layer in &mut self.layers {
            // Attention.
            let xn = fit(&mut s.xn, n * dim);
            let act = fit(&mut s.act, n * dim / QK);
            norm_and_quantize(&s.x[..n * dim], &layer.attn_norm, c.rms_eps, xn, act);
            let q = fit(&mut s.q, n * dim);
            let k = fit(&mut s.k, n * kv);
            let v = fit(&mut s.v, n * kv);
            par_matmul(
                &self.pool,
                isa,
                &mut [
                    (&layer.wq, &mut *q),
                    (&layer.wk, &mut *k),
                    (&layer.wv, &mut *v),
                ],
                act,
                n,
            );
            for t in 0..n {
                let r = &s.rope[t * hd / 2..(t + 1) * hd / 2];
                for h in q[t * dim..(t + 1) * dim].chunks_exact_mut(hd) {
                    rotate(h, r);
                }
                for h in k[t * kv..(t + 1) * kv].chunks_exact_mut(hd) {
                    rotate(h, r);
                }
            }
            // Grown 256 positions at a time (not doubled): the cache is most of what a long
            // conversation adds to memory.
            let want = (start + n).next_multiple_of(256).min(c.context) * kv;
            if layer.k.capacity() < want {
                layer.k.reserve_exact(want - layer.k.len());
                layer.v.reserve_exact(want - layer.v.len());
            }
            layer.k.extend(k.iter().map(|&x| f16::from_f32(x)));
            layer.v.extend(v.iter().map(|&x| f16::from_f32(x)));
            let att = fit(&mut s.att, n * dim);
            attention(&self.pool, isa, &c, start, n, q, &layer.k, &layer.v, att);
            let act = fit(&mut s.act, n * dim / QK);
            for (a, o) in att.chunks_exact(dim).zip(act.chunks_exact_mut(dim / QK)) {
                quant::quantize_row(a, o);
            }
            let proj = fit(&mut s.proj, n * dim);
            par_matmul(&self.pool, isa, &mut [(&layer.wo, &mut *proj)], act, n);
            for (x, p) in s.x[..n * dim].iter_mut().zip(proj.iter()) {
                *x += p;
            }

            // Feed-forward.
            let xn = fit(&mut s.xn, n * dim);
            let act = fit(&mut s.act, n * dim / QK);
            norm_and_quantize(&s.x[..n * dim], &layer.ffn_norm, c.rms_eps, xn, act);
            let gate = fit(&mut s.gate, n * c.ffn_dim);
            let up = fit(&mut s.up, n * c.ffn_dim);
            par_matmul(
                &self.pool,
                isa,
                &mut [(&layer.gate, &mut *gate), (&layer.up, &mut *up)],
                act,
                n,
            );
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            let ffn_act = fit(&mut s.ffn_act, n * c.ffn_dim / QK);
            for (g, o) in gate
                .chunks_exact(c.ffn_dim)
                .zip(ffn_act.chunks_exact_mut(c.ffn_dim / QK))
            {
                quant::quantize_row(g, o);
            }
            let proj = fit(&mut s.proj, n * dim);
            par_matmul(
                &self.pool,
                isa,
                &mut [(&layer.down, &mut *proj)],
                ffn_act,
                n,
            );
            for (x, p) in s.x[..n * dim].iter_mut().zip(proj.iter()) {
                *x += p;
            }
        }
        self.len = start + n;

        // The output projection, for the last token or all of them.
        let (first, rows) = match want {
            Logits::Last => (n - 1, 1),
            Logits::All => (0, n),
        };
        let xn = fit(&mut s.xn, rows * dim);
        let act = fit(&mut s.act, rows * dim / QK);
        norm_and_quantize(
            &s.x[first * dim..n * dim],
            &self.out_norm,
            c.rms_eps,
            xn,
            act,
        );
        let logits = fit(&mut s.logits, rows * c.vocab);
        let head = self.output.as_ref().unwrap_or(&self.embed);
        par_matmul(&self.pool, isa, &mut [(head, &mut *logits)], act, rows);
        &s.logits[..rows * c.vocab]
    }
}

fn tensor<'a>(header: &'a Header, name: &str) -> Option<&'a TensorInfo> {
    header.tensors.iter().find(|t| t.name == name)
}

/// Reads tensors out of the GGUF file, converting what the kernels do not run to Q8_0.
struct TensorReader<'a> {
    path: &'a Path,
    file: &'a mut std::fs::File,
    header: &'a Header,
}

/// A matrix planned into the arena.
struct Planned {
    name: String,
    info: TensorInfo,
    /// Stored in a format the kernels run (else converted to Q8_0).
    native: bool,
    ty: WeightType,
    rows: usize,
    cols: usize,
    bytes: usize,
}

const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_BF16: u32 = 30;

fn ggml_type_name(t: u32) -> String {
    match t {
        0 => "F32".into(),
        1 => "F16".into(),
        2 => "Q4_0".into(),
        3 => "Q4_1".into(),
        6 => "Q5_0".into(),
        7 => "Q5_1".into(),
        8 => "Q8_0".into(),
        9 => "Q8_1".into(),
        10 => "Q2_K".into(),
        11 => "Q3_K".into(),
        12 => "Q4_K".into(),
        13 => "Q5_K".into(),
        14 => "Q6_K".into(),
        15 => "Q8_K".into(),
        30 => "BF16".into(),
        t => format!("type {t}"),
    }
}

impl TensorReader<'_> {
    fn bad(&self, reason: String) -> ModelError {
        ModelError::Format {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn read(&mut self, info: &TensorInfo, bytes: usize) -> Result<Vec<u8>, ModelError> {
        let mut data = vec![0u8; bytes];
        self.read_into(info, &mut data)?;
        Ok(data)
    }

    fn read_into(&mut self, info: &TensorInfo, dest: &mut [u8]) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: self.path.to_path_buf(),
            source,
        };
        let at = self.header.data_start + info.offset;
        self.file.seek(SeekFrom::Start(at)).map_err(io)?;
        self.file.read_exact(dest).map_err(io)
    }

    fn info(&self, name: &str, rows: usize, cols: usize) -> Result<TensorInfo, ModelError> {
        let info = tensor(self.header, name)
            .ok_or_else(|| self.bad(format!("tensor {name} is missing")))?
            .clone();
        let dims: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
        let want: Vec<usize> = if rows == 1 {
            vec![cols]
        } else {
            vec![cols, rows]
        };
        if dims != want {
            return Err(self.bad(format!(
                "tensor {name} has shape {dims:?}, the metadata implies {want:?}"
            )));
        }
        Ok(info)
    }

    /// What a weight matrix of `rows` × `cols` will take in the arena.
    fn plan(&self, name: &str, rows: usize, cols: usize) -> Result<Planned, ModelError> {
        let info = self.info(name, rows, cols)?;
        if !cols.is_multiple_of(QK) {
            return Err(self.bad(format!(
                "tensor {name}: {cols} columns, not a multiple of {QK}"
            )));
        }
        let native = WeightType::from_ggml_type(info.ggml_type);
        let ty = native.unwrap_or(WeightType::Q8_0);
        Ok(Planned {
            name: name.to_string(),
            info,
            native: native.is_some(),
            ty,
            rows,
            cols,
            bytes: rows * cols / QK * ty.block_bytes(),
        })
    }

    /// Reads a planned matrix into `dest`, converting it to Q8_0 if the kernels do not run
    /// its own format.
    fn fill(&mut self, p: &Planned, dest: &mut [u8]) -> Result<(), ModelError> {
        if p.native {
            return self.read_into(&p.info, dest);
        }
        let floats = self.floats(&p.info, &p.name, p.rows * p.cols)?;
        let mut data = Vec::with_capacity(p.bytes);
        quant::quantize_q8_0(&floats, &mut data);
        dest.copy_from_slice(&data);
        Ok(())
    }

    /// A vector of `n` floats (norm weights).
    fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        let info = self.info(name, 1, n)?;
        self.floats(&info, name, n)
    }

    fn floats(&mut self, info: &TensorInfo, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        let data = match info.ggml_type {
            GGML_F32 => self.read(info, n * 4)?,
            GGML_F16 | GGML_BF16 => self.read(info, n * 2)?,
            t => {
                return Err(self.bad(format!(
                    "tensor {name} is {}, which sotto cannot run yet (Q4_0, Q4_1, Q8_0, F16, BF16 and F32 it can)",
                    ggml_type_name(t)
                )));
            }
        };
        Ok(match info.ggml_type {
            GGML_F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            GGML_F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }
}

/// RMS-normalises each token of `x` with `weight`, into `xn`, and quantizes it into `act`.
fn norm_and_quantize(x: &[f32], weight: &[f32], eps: f32, xn: &mut [f32], act: &mut [ActBlock]) {
    let dim = weight.len();
    for ((x, xn), act) in x
        .chunks_exact(dim)
        .zip(xn.chunks_exact_mut(dim))
        .zip(act.chunks_exact_mut(dim / QK))
    {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in xn.iter_mut().zip(x).zip(weight) {
            *o = v * scale * w;
        }
        quant::quantize_row(xn, act);
    }
}

/// Rotary position embedding on one head, adjacent pairs (GGUF's llama layout).
fn rotate(h: &mut [f32], cos_sin: &[(f32, f32)]) {
    for (pair, &(cos, sin)) in h.chunks_exact_mut(2).zip(cos_sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * cos - b * sin;
        pair[1] = a * sin + b * cos;
    }
}

/// Rows per chunk of a pool run, so each thread gets several chunks to balance with.
fn chunk_rows(total_rows: usize, threads: usize, n_tok: usize) -> usize {
    if threads <= 1 {
        return total_rows.max(1);
    }
    let per = total_rows.div_ceil(threads * 8);
    // Enough work per chunk that claiming it is cheap by comparison.
    let min = (64 / n_tok.max(1)).max(4);
    per.max(min).next_multiple_of(4)
}

/// Several matrix products of the same input, as one pool run.
fn par_matmul(
    pool: &Pool,
    isa: Isa,
    jobs: &mut [(&QMatrix, &mut [f32])],
    act: &[ActBlock],
    n_tok: usize,
) {
    let total: usize = jobs.iter().map(|(w, _)| w.rows).sum();
    let step = chunk_rows(total, pool.threads(), n_tok);
    let targets: Vec<(&QMatrix, OutPtr, usize)> = jobs
        .iter_mut()
        .map(|(w, out)| {
            assert!(out.len() >= n_tok * w.rows);
            (*w, OutPtr::new(out, w.rows), w.rows.div_ceil(step))
        })
        .collect();
    let n_chunks = targets.iter().map(|t| t.2).sum();
    pool.run(n_chunks, &|mut i| {
        for (w, out, chunks) in &targets {
            if i < *chunks {
                let rows = i * step..((i + 1) * step).min(w.rows);
                // SAFETY: each chunk index maps to its own row range of one output, so
                // concurrent calls write disjoint cells.
                unsafe { quant::matmul_rows(isa, w, rows, act, n_tok, *out) };
                return;
            }
            i -= chunks;
        }
    });
}

/// Causal attention of `n` new tokens (at positions `start..start + n`) over the cache.
#[allow(clippy::too_many_arguments)]
fn attention(
    pool: &Pool,
    isa: Isa,
    c: &Config,
    start: usize,
    n: usize,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    out: &mut [f32],
) {
    let (dim, kv, hd) = (c.dim, c.kv_dim(), c.head_dim);
    let group = c.n_head / c.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let units = n * c.n_head;
    let out_ptr = OutPtr::new(out, dim);
    let one = |u: usize, scores: &mut Vec<f32>, acc: &mut [f32]| {
        let (t, h) = (u / c.n_head, u % c.n_head);
        let g = h / group;
        let span = start + t + 1;
        let qh = &q[t * dim + h * hd..t * dim + (h + 1) * hd];
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in 0..span {
            let s = quant::dot_f16(isa, qh, &k[j * kv + g * hd..j * kv + (g + 1) * hd]) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        acc.fill(0.0);
        for (j, s) in scores.iter().enumerate() {
            quant::axpy_f16(
                isa,
                acc,
                s / sum,
                &v[j * kv + g * hd..j * kv + (g + 1) * hd],
            );
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: unit u = (t, h) is the only writer of out[t][h·hd..(h+1)·hd].
            unsafe { out_ptr.write_at(t, h * hd + i, *a) };
        }
    };
    // Small attention (a short conversation, one token) is not worth waking threads for.
    let work = units * (start + n) * hd;
    if pool.threads() <= 1 || work < (1 << 16) {
        let mut scores = Vec::with_capacity(start + n);
        let mut acc = vec![0f32; hd];
        for u in 0..units {
            one(u, &mut scores, &mut acc);
        }
    } else {
        pool.run(units, &|u| {
            let mut scores = Vec::with_capacity(start + n);
            let mut acc = vec![0f32; hd];
            one(u, &mut scores, &mut acc);
        });
    }
}
