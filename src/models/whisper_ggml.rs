//! whisper.cpp's ggml model format: a converter from CTranslate2 Whisper checkpoints, and a
//! header reader that validates a file before it is handed to whisper.cpp.
//!
//! Format: magic 0x67676d6c, 11 i32 hyper-parameters, the mel filterbank (i32 n_mel, i32 n_fft,
//! f32 values), the vocabulary (i32 count, then i32 length + raw bytes per token), then tensors
//! (i32 n_dims, i32 name length, i32 ggml type, dims in reverse order, name, data). Tensor names
//! follow openai-whisper (`encoder.blocks.0.attn.query.weight`). Conv biases are stored as
//! `[n, 1]`; 1-D tensors, conv biases and positional embeddings as f32; the rest as f16.
//!
//! The converter is deterministic: the same checkpoint always gives the same bytes, so the
//! output can be pinned by sha256 like any fetched file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use half::f16;

use super::ModelError;
use super::ct2::{Checkpoint, DType, Variable};

pub const MAGIC: u32 = 0x6767_6d6c;
const N_FFT_BINS: usize = 201; // n_fft 400 → 400/2 + 1 frequency bins
const WHISPER_SAMPLE_RATE_HZ: f64 = 16_000.0;

/// The 11 hyper-parameters at the head of a whisper.cpp model, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HParams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    pub ftype: i32,
}

impl HParams {
    fn to_array(self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_array(a: [i32; 11]) -> Self {
        Self {
            n_vocab: a[0],
            n_audio_ctx: a[1],
            n_audio_state: a[2],
            n_audio_head: a[3],
            n_audio_layer: a[4],
            n_text_ctx: a[5],
            n_text_state: a[6],
            n_text_head: a[7],
            n_text_layer: a[8],
            n_mels: a[9],
            ftype: a[10],
        }
    }
}

/// A tensor entry as found in the file (dims in natural, outermost-first order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
    pub ggml_type: i32,
    pub offset: u64,
}

/// Everything but the tensor data, read and checked against the file's length.
#[derive(Clone, Debug)]
pub struct Header {
    pub hparams: HParams,
    pub n_mel_filters: usize,
    pub n_vocab_tokens: usize,
    pub tensors: Vec<TensorInfo>,
}

fn ggml_type_name(ggml_type: i32) -> &'static str {
    match ggml_type {
        0 => "float32",
        1 => "float16",
        2 => "q4_0",
        3 => "q4_1",
        6 => "q5_0",
        7 => "q5_1",
        8 => "q8_0",
        30 => "bfloat16",
        _ => "an unknown type",
    }
}

/// Bytes taken by `n` elements of a ggml type, or None for a type whisper models do not use.
fn ggml_type_bytes(ggml_type: i32, n: usize) -> Option<usize> {
    // (elements per block, bytes per block)
    let (block, bytes) = match ggml_type {
        0 => (1, 4),   // F32
        1 => (1, 2),   // F16
        2 => (32, 18), // Q4_0
        3 => (32, 20), // Q4_1
        6 => (32, 22), // Q5_0
        7 => (32, 24), // Q5_1
        8 => (32, 34), // Q8_0
        30 => (1, 2),  // BF16
        _ => return None,
    };
    n.is_multiple_of(block).then(|| n / block * bytes)
}

impl Header {
    /// Reads and validates a whisper.cpp model file without loading its tensor data. Every
    /// tensor must lie wholly inside the file and the file must end with the last tensor:
    /// whisper.cpp itself is not robust against truncated files.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        Self::parse(path, &mut BufReader::new(file), file_len)
    }

    /// [`Header::read`] over any reader of `file_len` bytes (`path` names it in errors).
    pub fn parse<R: Read + Seek>(
        path: &Path,
        r: &mut R,
        file_len: u64,
    ) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let truncated = |what: &str| bad(format!("truncated while reading {what}"));
        let i32_at = |r: &mut R, what: &str| -> Result<i32, ModelError> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| truncated(what))?;
            Ok(i32::from_le_bytes(b))
        };
        let magic = i32_at(r, "the magic number")? as u32;
        if magic != MAGIC {
            return Err(bad(format!(
                "not a whisper.cpp ggml model (magic {magic:#010x}, expected {MAGIC:#010x})"
            )));
        }
        let mut hp = [0i32; 11];
        for v in hp.iter_mut() {
            *v = i32_at(r, "the hyper-parameters")?;
        }
        let hparams = HParams::from_array(hp);
        if hp[..10].iter().any(|&v| v <= 0) {
            return Err(bad(format!("implausible hyper-parameters {hparams:?}")));
        }
        let n_mel = i32_at(r, "the mel filterbank")?;
        let n_fft = i32_at(r, "the mel filterbank")?;
        let remaining =
            |r: &mut R| -> u64 { file_len.saturating_sub(r.stream_position().unwrap_or(file_len)) };
        let filt_bytes = (n_mel.max(0) as u64) * (n_fft.max(0) as u64) * 4;
        if n_mel <= 0 || n_fft <= 0 || filt_bytes > remaining(r) {
            return Err(bad(format!("bad mel filterbank size {n_mel}x{n_fft}")));
        }
        r.seek_relative(filt_bytes as i64)
            .map_err(|e| ModelError::io(path, e))?;
        let n_tokens = i32_at(r, "the vocabulary")?;
        if n_tokens < 0 || n_tokens > hparams.n_vocab {
            return Err(bad(format!(
                "vocabulary of {n_tokens} tokens for n_vocab {}",
                hparams.n_vocab
            )));
        }
        for _ in 0..n_tokens {
            let len = i32_at(r, "the vocabulary")?;
            if len < 0 || len as u64 > remaining(r) {
                return Err(truncated("the vocabulary"));
            }
            r.seek_relative(len as i64)
                .map_err(|e| ModelError::io(path, e))?;
        }
        let mut tensors = Vec::new();
        while remaining(r) > 0 {
            let n_dims = i32_at(r, "a tensor header")?;
            let name_len = i32_at(r, "a tensor header")?;
            let ggml_type = i32_at(r, "a tensor header")?;
            if !(1..=4).contains(&n_dims) || !(1..=256).contains(&name_len) {
                return Err(bad(format!(
                    "bad tensor header (n_dims {n_dims}, name length {name_len}) after {} tensors",
                    tensors.len()
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = i32_at(r, "tensor dimensions")?;
                if d <= 0 {
                    return Err(bad(format!("tensor dimension {d}")));
                }
                dims.push(d as usize);
            }
            dims.reverse();
            let mut name = vec![0u8; name_len as usize];
            r.read_exact(&mut name)
                .map_err(|_| truncated("a tensor name"))?;
            let name = String::from_utf8(name).map_err(|_| bad("tensor name not UTF-8".into()))?;
            let n: usize = dims.iter().product();
            let bytes = ggml_type_bytes(ggml_type, n)
                .ok_or_else(|| bad(format!("tensor {name}: unsupported ggml type {ggml_type}")))?;
            let offset = r.stream_position().map_err(|e| ModelError::io(path, e))?;
            if bytes as u64 > remaining(r) {
                return Err(bad(format!(
                    "truncated: tensor {name} needs {bytes} bytes at offset {offset}, \
                     file is {file_len} bytes"
                )));
            }
            r.seek_relative(bytes as i64)
                .map_err(|e| ModelError::io(path, e))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        if tensors.is_empty() {
            return Err(bad("no tensors: the file is truncated".into()));
        }
        // whisper.cpp loads a float32 model (ftype 0) and then aborts the process in its
        // convolution, which takes float16 kernels only: refuse it here, with the way out.
        if let Some(conv) = tensors
            .iter()
            .find(|t| t.name.starts_with("encoder.conv") && t.dims.len() == 3 && t.ggml_type != 1)
        {
            return Err(bad(format!(
                "tensor {} is {} where whisper.cpp needs float16 (a float32 model, ftype {}, \
                 stops whisper.cpp in its convolution); convert the model to float16, e.g. \
                 `sotto models add` on the original .pt or CTranslate2 directory",
                conv.name,
                ggml_type_name(conv.ggml_type),
                hparams.ftype
            )));
        }
        Ok(Self {
            hparams,
            n_mel_filters: n_mel as usize,
            n_vocab_tokens: n_tokens as usize,
            tensors,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Slaney-style mel filterbank, as librosa.filters.mel(sr=16000, n_fft=400, n_mels, norm="slaney")
/// computes it and whisper.cpp expects it in the model file. Row-major `[n_mels][201]`.
pub fn mel_filterbank(n_mels: usize) -> Vec<f32> {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f < MIN_LOG_HZ {
            f / F_SP
        } else {
            MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep
        }
    };
    let mel_to_hz = |m: f64| {
        if m < MIN_LOG_MEL {
            m * F_SP
        } else {
            MIN_LOG_HZ * (logstep * (m - MIN_LOG_MEL)).exp()
        }
    };
    let nyquist = WHISPER_SAMPLE_RATE_HZ / 2.0;
    let fft_hz: Vec<f64> = (0..N_FFT_BINS)
        .map(|i| i as f64 * nyquist / (N_FFT_BINS - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = Vec::with_capacity(n_mels * N_FFT_BINS);
    for i in 0..n_mels {
        let enorm = 2.0 / (edges[i + 2] - edges[i]);
        for &f in &fft_hz {
            let up = (f - edges[i]) / (edges[i + 1] - edges[i]);
            let down = (edges[i + 2] - f) / (edges[i + 2] - edges[i + 1]);
            out.push((up.min(down).max(0.0) * enorm) as f32);
        }
    }
    out
}

/// GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 onwards.
/// Returns the inverse map, char → byte.
pub fn byte_level_decoder() -> HashMap<char, u8> {
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut next = 0;
    for b in 0..=255u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + next);
            next += 1;
        }
    }
    bytes
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

/// Reads the BPE vocabulary of a Hugging Face `tokenizer.json` as raw token bytes, by id.
pub fn read_vocab(path: &Path) -> Result<Vec<Vec<u8>>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })?;
    let vocab = json
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| ModelError::Format {
            path: path.to_path_buf(),
            reason: "no model.vocab object".into(),
        })?;
    let decoder = byte_level_decoder();
    let mut tokens = vec![None; vocab.len()];
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < tokens.len());
        let Some(id) = id else {
            return Err(ModelError::Format {
                path: path.to_path_buf(),
                reason: format!("token {token:?} has an id outside 0..{}", tokens.len()),
            });
        };
        let raw: Option<Vec<u8>> = token.chars().map(|c| decoder.get(&c).copied()).collect();
        tokens[id] = Some(raw.ok_or_else(|| ModelError::Format {
            path: path.to_path_buf(),
            reason: format!("token {token:?} is not byte-level BPE"),
        })?);
    }
    tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.ok_or_else(|| ModelError::Format {
                path: path.to_path_buf(),
                reason: format!("vocabulary has no token with id {i}"),
            })
        })
        .collect()
}

/// How a tensor is stored in the output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    F32,
    F16,
}

struct OutTensor<'a> {
    name: String,
    dims: Vec<usize>,
    store: Store,
    src: Variable<'a>,
}

/// Maps a CTranslate2 WhisperSpec checkpoint onto openai-whisper tensor names, splitting the
/// fused attention projections. Order is fixed, so the output bytes are deterministic.
fn plan<'a>(ckpt: &Checkpoint<'a>) -> Result<(HParams, Vec<OutTensor<'a>>), ModelError> {
    let bad = |reason: String| ModelError::Format {
        path: ckpt.path.clone(),
        reason,
    };
    if ckpt.spec != "WhisperSpec" {
        return Err(bad(format!(
            "a {} checkpoint, not a Whisper one (WhisperSpec)",
            ckpt.spec
        )));
    }
    let count_layers = |part: &str| {
        (0..)
            .take_while(|i| {
                ckpt.variables
                    .contains_key(&format!("{part}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    };
    let enc_layers = count_layers("encoder");
    let dec_layers = count_layers("decoder");
    let heads = |part: &str| -> Result<i32, ModelError> {
        ckpt.get(&format!("{part}/num_heads"))?
            .as_int()
            .map(|h| h as i32)
            .ok_or_else(|| bad(format!("{part}/num_heads is not a scalar integer")))
    };
    let dims = |name: &str| -> Result<Vec<usize>, ModelError> { Ok(ckpt.get(name)?.dims.clone()) };
    let enc_pos = dims("encoder/position_encodings/encodings")?;
    let dec_pos = dims("decoder/position_encodings/encodings")?;
    let embed = dims("decoder/embeddings/weight")?;
    let conv1 = dims("encoder/conv1/weight")?;
    if enc_pos.len() != 2 || dec_pos.len() != 2 || embed.len() != 2 || conv1.len() != 3 {
        return Err(bad("unexpected tensor ranks for a Whisper model".into()));
    }
    let hparams = HParams {
        n_vocab: embed[0] as i32,
        n_audio_ctx: enc_pos[0] as i32,
        n_audio_state: enc_pos[1] as i32,
        n_audio_head: heads("encoder")?,
        n_audio_layer: enc_layers as i32,
        n_text_ctx: dec_pos[0] as i32,
        n_text_state: dec_pos[1] as i32,
        n_text_head: heads("decoder")?,
        n_text_layer: dec_layers as i32,
        n_mels: conv1[1] as i32,
        ftype: 1,
    };

    let mut out = Vec::new();
    let mut put = |name: String, src: Variable<'a>, store: Store| {
        out.push(OutTensor {
            name,
            dims: src.dims.clone(),
            store,
            src,
        })
    };
    let var = |name: &str| ckpt.get(name).cloned();
    // Splits a variable fused along dim 0 into `parts` equal pieces.
    let split = |v: Variable<'a>, parts: usize| -> Result<Vec<Variable<'a>>, ModelError> {
        if v.dims.is_empty() || !v.dims[0].is_multiple_of(parts) {
            return Err(bad(format!(
                "cannot split {:?} in {parts} along dim 0",
                v.dims
            )));
        }
        let rows = v.dims[0] / parts;
        let chunk = v.data.len() / parts;
        Ok((0..parts)
            .map(|i| {
                let mut dims = v.dims.clone();
                dims[0] = rows;
                Variable {
                    dims,
                    dtype: v.dtype,
                    data: &v.data[i * chunk..(i + 1) * chunk],
                }
            })
            .collect())
    };
    let weight_store = |v: &Variable| {
        if v.dims.len() < 2 {
            Store::F32
        } else {
            Store::F16
        }
    };
    let linear = |dst: &str, src: &str, put: &mut dyn FnMut(String, Variable<'a>, Store)| {
        let w = var(&format!("{src}/weight"))?;
        let b = var(&format!("{src}/bias"))?;
        put(format!("{dst}.weight"), w, Store::F16);
        put(format!("{dst}.bias"), b, Store::F32);
        Ok::<(), ModelError>(())
    };
    let norm = |dst: &str, src: &str, put: &mut dyn FnMut(String, Variable<'a>, Store)| {
        put(
            format!("{dst}.weight"),
            var(&format!("{src}/gamma"))?,
            Store::F32,
        );
        put(
            format!("{dst}.bias"),
            var(&format!("{src}/beta"))?,
            Store::F32,
        );
        Ok::<(), ModelError>(())
    };
    let zero_bias = |v: &Variable, what: &str| -> Result<(), ModelError> {
        if v.data.iter().any(|&b| b != 0) {
            return Err(bad(format!(
                "{what}: Whisper's key projection has no bias, but the fused key bias is not zero"
            )));
        }
        Ok(())
    };

    // Encoder stem.
    for conv in ["conv1", "conv2"] {
        let w = var(&format!("encoder/{conv}/weight"))?;
        let store = weight_store(&w);
        put(format!("encoder.{conv}.weight"), w, store);
        let mut b = var(&format!("encoder/{conv}/bias"))?;
        b.dims = vec![b.dims[0], 1];
        put(format!("encoder.{conv}.bias"), b, Store::F32);
    }
    put(
        "encoder.positional_embedding".into(),
        var("encoder/position_encodings/encodings")?,
        Store::F32,
    );
    for (part, n_layers) in [("encoder", enc_layers), ("decoder", dec_layers)] {
        if part == "decoder" {
            put(
                "decoder.token_embedding.weight".into(),
                var("decoder/embeddings/weight")?,
                Store::F16,
            );
            put(
                "decoder.positional_embedding".into(),
                var("decoder/position_encodings/encodings")?,
                Store::F32,
            );
        }
        for i in 0..n_layers {
            let s = format!("{part}/layer_{i}");
            let d = format!("{part}.blocks.{i}");
            let qkv_w = split(var(&format!("{s}/self_attention/linear_0/weight"))?, 3)?;
            let qkv_b = split(var(&format!("{s}/self_attention/linear_0/bias"))?, 3)?;
            zero_bias(&qkv_b[1], &format!("{s}/self_attention"))?;
            put(
                format!("{d}.attn.query.weight"),
                qkv_w[0].clone(),
                Store::F16,
            );
            put(format!("{d}.attn.query.bias"), qkv_b[0].clone(), Store::F32);
            put(format!("{d}.attn.key.weight"), qkv_w[1].clone(), Store::F16);
            put(
                format!("{d}.attn.value.weight"),
                qkv_w[2].clone(),
                Store::F16,
            );
            put(format!("{d}.attn.value.bias"), qkv_b[2].clone(), Store::F32);
            linear(
                &format!("{d}.attn.out"),
                &format!("{s}/self_attention/linear_1"),
                &mut put,
            )?;
            norm(
                &format!("{d}.attn_ln"),
                &format!("{s}/self_attention/layer_norm"),
                &mut put,
            )?;
            if part == "decoder" {
                linear(
                    &format!("{d}.cross_attn.query"),
                    &format!("{s}/attention/linear_0"),
                    &mut put,
                )?;
                let kv_w = split(var(&format!("{s}/attention/linear_1/weight"))?, 2)?;
                let kv_b = split(var(&format!("{s}/attention/linear_1/bias"))?, 2)?;
                zero_bias(&kv_b[0], &format!("{s}/attention"))?;
                put(
                    format!("{d}.cross_attn.key.weight"),
                    kv_w[0].clone(),
                    Store::F16,
                );
                put(
                    format!("{d}.cross_attn.value.weight"),
                    kv_w[1].clone(),
                    Store::F16,
                );
                put(
                    format!("{d}.cross_attn.value.bias"),
                    kv_b[1].clone(),
                    Store::F32,
                );
                linear(
                    &format!("{d}.cross_attn.out"),
                    &format!("{s}/attention/linear_2"),
                    &mut put,
                )?;
                norm(
                    &format!("{d}.cross_attn_ln"),
                    &format!("{s}/attention/layer_norm"),
                    &mut put,
                )?;
            }
            linear(
                &format!("{d}.mlp.0"),
                &format!("{s}/ffn/linear_0"),
                &mut put,
            )?;
            linear(
                &format!("{d}.mlp.2"),
                &format!("{s}/ffn/linear_1"),
                &mut put,
            )?;
            norm(
                &format!("{d}.mlp_ln"),
                &format!("{s}/ffn/layer_norm"),
                &mut put,
            )?;
        }
        let ln = if part == "encoder" {
            "encoder.ln_post"
        } else {
            "decoder.ln"
        };
        norm(ln, &format!("{part}/layer_norm"), &mut put)?;
    }
    for t in &out {
        if !matches!(t.src.dtype, DType::F16 | DType::F32) {
            return Err(bad(format!(
                "tensor {} is {:?}; only float16/float32 checkpoints can be converted \
                 (re-export the CTranslate2 model without int8 quantization)",
                t.name, t.src.dtype
            )));
        }
    }
    Ok((hparams, out))
}

fn src_f32(v: &Variable, i: usize) -> f32 {
    match v.dtype {
        DType::F16 => f16::from_le_bytes([v.data[2 * i], v.data[2 * i + 1]]).to_f32(),
        DType::BF16 => {
            f32::from_bits(u32::from(u16::from_le_bytes([v.data[2 * i], v.data[2 * i + 1]])) << 16)
        }
        DType::F32 => f32::from_le_bytes([
            v.data[4 * i],
            v.data[4 * i + 1],
            v.data[4 * i + 2],
            v.data[4 * i + 3],
        ]),
        // `plan` and `write_model` reject every other dtype before anything is written.
        _ => unreachable!("only F16, BF16 and F32 sources are converted"),
    }
}

/// Converts a CTranslate2 Whisper directory (model.bin + tokenizer.json) into one whisper.cpp
/// ggml file at `out`. Writes to a temporary file beside `out` and renames it into place.
/// `progress(done, total)` is called after each tensor.
pub fn convert_ct2(
    ct2_dir: &Path,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<HParams, ModelError> {
    let model_path = ct2_dir.join("model.bin");
    let bytes = std::fs::read(&model_path).map_err(|e| ModelError::io(&model_path, e))?;
    let ckpt = Checkpoint::parse(&model_path, &bytes)?;
    let (hparams, tensors) = plan(&ckpt)?;
    let vocab = read_vocab(&ct2_dir.join("tokenizer.json"))?;
    write_model(
        out,
        &ct2_dir.join("tokenizer.json"),
        hparams,
        &vocab,
        &tensors,
        progress,
    )?;
    Ok(hparams)
}

/// Converts a Whisper checkpoint in OpenAI's PyTorch format (`{"dims", "model_state_dict"}`,
/// as openai-whisper and AI2's OLMoASR publish them) into a whisper.cpp ggml file, with the
/// vocabulary of `tokenizer_json` (Whisper's tokenizer.json: English for `.en` models,
/// multilingual otherwise). The tensors are laid out exactly as [`convert_ct2`] lays them
/// out, so the same weights give the same bytes by either path.
pub fn convert_pt(
    pt: &Path,
    tokenizer_json: &Path,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<HParams, ModelError> {
    let ckpt = super::torch::Checkpoint::read(pt)?;
    let bad = |reason: String| ModelError::Format {
        path: pt.to_path_buf(),
        reason,
    };
    let dims = ckpt
        .root
        .get("dims")
        .ok_or_else(|| bad("no \"dims\": not a Whisper checkpoint in OpenAI's format".into()))?;
    let dim = |k: &str| -> Result<i32, ModelError> {
        dims.get(k)
            .and_then(super::torch::Value::as_int)
            .map(|v| v as i32)
            .ok_or_else(|| bad(format!("dims.{k} is missing")))
    };
    let hparams = HParams {
        n_vocab: dim("n_vocab")?,
        n_audio_ctx: dim("n_audio_ctx")?,
        n_audio_state: dim("n_audio_state")?,
        n_audio_head: dim("n_audio_head")?,
        n_audio_layer: dim("n_audio_layer")?,
        n_text_ctx: dim("n_text_ctx")?,
        n_text_state: dim("n_text_state")?,
        n_text_head: dim("n_text_head")?,
        n_text_layer: dim("n_text_layer")?,
        n_mels: dim("n_mels")?,
        ftype: 1,
    };
    let Some(super::torch::Value::Dict(state)) = ckpt.root.get("model_state_dict") else {
        return Err(bad("no \"model_state_dict\"".into()));
    };
    let mut vars: HashMap<String, Variable> = HashMap::new();
    for (k, v) in state {
        let (super::torch::Value::Str(name), super::torch::Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let data = ckpt.tensor_bytes(name, t)?;
        vars.insert(
            name.clone(),
            Variable {
                dims: t.shape.clone(),
                dtype: t.dtype,
                data,
            },
        );
    }
    let tensors = plan_openai(pt, &hparams, &vars)?;
    let vocab = read_vocab(tokenizer_json)?;
    write_model(out, tokenizer_json, hparams, &vocab, &tensors, progress)?;
    Ok(hparams)
}

/// Converts a Hugging Face Whisper directory (`config.json`, `model.safetensors` or its
/// shards, `tokenizer.json`; what `transformers` saves) into a whisper.cpp ggml file. The
/// tensors are renamed to OpenAI's names and laid out as [`convert_pt`] lays them out, so the
/// same weights give the same bytes by every path.
pub fn convert_hf(
    dir: &Path,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<HParams, ModelError> {
    let config_path = dir.join("config.json");
    let bad = |path: &Path, reason: String| ModelError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let config_bytes = super::read_regular(&config_path, 1 << 20, "config.json")
        .map_err(|e| ModelError::io(&config_path, e))?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(&config_path, format!("not JSON: {e}")))?;
    if config["model_type"] != "whisper" {
        return Err(bad(
            &config_path,
            format!("model_type is {}, not \"whisper\"", config["model_type"]),
        ));
    }
    let dim = |k: &str| -> Result<i32, ModelError> {
        config[k]
            .as_i64()
            .filter(|v| *v > 0 && *v < 1 << 20)
            .map(|v| v as i32)
            .ok_or_else(|| bad(&config_path, format!("{k} is missing or not a size")))
    };
    let hparams = HParams {
        n_vocab: dim("vocab_size")?,
        n_audio_ctx: dim("max_source_positions")?,
        n_audio_state: dim("d_model")?,
        n_audio_head: dim("encoder_attention_heads")?,
        n_audio_layer: dim("encoder_layers")?,
        n_text_ctx: dim("max_target_positions")?,
        n_text_state: dim("d_model")?,
        n_text_head: dim("decoder_attention_heads")?,
        n_text_layer: dim("decoder_layers")?,
        n_mels: dim("num_mel_bins")?,
        ftype: 1,
    };
    let shards = safetensors_files(dir)?;
    let files: Vec<Vec<u8>> = shards
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| ModelError::io(p, e)))
        .collect::<Result<_, _>>()?;
    let mut vars: HashMap<String, Variable> = HashMap::new();
    for (path, bytes) in shards.iter().zip(&files) {
        for (name, v) in safetensors(path, bytes)? {
            if let Some(openai) = hf_to_openai(&name) {
                vars.insert(openai, v);
            }
        }
    }
    let tensors = plan_openai(dir, &hparams, &vars)?;
    let tokenizer = dir.join("tokenizer.json");
    let vocab = read_vocab(&tokenizer)?;
    write_model(out, &tokenizer, hparams, &vocab, &tensors, progress)?;
    Ok(hparams)
}

/// The `.safetensors` files of a Hugging Face directory (its shards), by name; at least one.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(ModelError::Format {
            path: dir.to_path_buf(),
            reason: "no .safetensors file".into(),
        });
    }
    Ok(shards)
}

/// The tensors of a safetensors file: an 8-byte header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the data. Every range is checked.
fn safetensors<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<Vec<(String, Variable<'a>)>, ModelError> {
    let bad = |reason: String| ModelError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| bad("too short for a safetensors header".into()))?;
    let start = 8usize
        .checked_add(usize::try_from(len).map_err(|_| bad("header length".into()))?)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header of {len} bytes in a {}-byte file",
                bytes.len()
            ))
        })?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..start]).map_err(|e| bad(format!("header: {e}")))?;
    let data = &bytes[start..];
    let mut out = Vec::new();
    for (name, t) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = match t["dtype"].as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            other => {
                return Err(bad(format!(
                    "tensor {name}: dtype {other:?} (F32, F16, BF16 convert)"
                )));
            }
        };
        let dims: Vec<usize> = t["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .ok_or_else(|| bad(format!("tensor {name}: no shape")))?;
        let range = t["data_offsets"]
            .as_array()
            .and_then(|r| Some((r.first()?.as_u64()? as usize, r.get(1)?.as_u64()? as usize)))
            .filter(|(b, e)| b <= e && *e <= data.len())
            .ok_or_else(|| bad(format!("tensor {name}: data offsets outside the file")))?;
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.and_then(|n| n.checked_mul(dtype.size_bytes())) != Some(range.1 - range.0) {
            return Err(bad(format!(
                "tensor {name}: shape {dims:?} does not fit its bytes"
            )));
        }
        out.push((
            name,
            Variable {
                dims,
                dtype,
                data: &data[range.0..range.1],
            },
        ));
    }
    Ok(out)
}

/// A `transformers` Whisper tensor name as OpenAI's checkpoint names it (None: not used,
/// such as `proj_out`, which is the token embedding again).
fn hf_to_openai(name: &str) -> Option<String> {
    let n = name.strip_prefix("model.")?;
    let whole = [
        (
            "encoder.embed_positions.weight",
            "encoder.positional_embedding",
        ),
        (
            "decoder.embed_positions.weight",
            "decoder.positional_embedding",
        ),
        (
            "decoder.embed_tokens.weight",
            "decoder.token_embedding.weight",
        ),
    ];
    if let Some((_, o)) = whole.iter().find(|(h, _)| *h == n) {
        return Some(o.to_string());
    }
    let mut o = n
        .replacen("encoder.layer_norm.", "encoder.ln_post.", 1)
        .replacen("decoder.layer_norm.", "decoder.ln.", 1);
    for (h, to) in [
        (".layers.", ".blocks."),
        (".self_attn_layer_norm.", ".attn_ln."),
        (".encoder_attn_layer_norm.", ".cross_attn_ln."),
        (".final_layer_norm.", ".mlp_ln."),
        (".self_attn.", ".attn."),
        (".encoder_attn.", ".cross_attn."),
        (".q_proj.", ".query."),
        (".k_proj.", ".key."),
        (".v_proj.", ".value."),
        (".out_proj.", ".out."),
        (".fc1.", ".mlp.0."),
        (".fc2.", ".mlp.2."),
    ] {
        o = o.replace(h, to);
    }
    Some(o)
}

/// The tensors of an OpenAI-format state dict, in [`plan`]'s order and storage.
fn plan_openai<'a>(
    path: &Path,
    h: &HParams,
    vars: &HashMap<String, Variable<'a>>,
) -> Result<Vec<OutTensor<'a>>, ModelError> {
    let bad = |reason: String| ModelError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    let mut put = |name: String, store: Store, reshape: Option<Vec<usize>>| {
        let v = vars
            .get(&name)
            .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
        let mut src = v.clone();
        if let Some(dims) = reshape {
            src.dims = dims;
        }
        out.push(OutTensor {
            name,
            dims: src.dims.clone(),
            store,
            src,
        });
        Ok::<(), ModelError>(())
    };
    for conv in ["conv1", "conv2"] {
        let w = format!("encoder.{conv}.weight");
        let store = if vars.get(&w).is_some_and(|v| v.dims.len() < 2) {
            Store::F32
        } else {
            Store::F16
        };
        put(w, store, None)?;
        put(
            format!("encoder.{conv}.bias"),
            Store::F32,
            Some(vec![h.n_audio_state as usize, 1]),
        )?;
    }
    put("encoder.positional_embedding".into(), Store::F32, None)?;
    for (part, n_layers) in [("encoder", h.n_audio_layer), ("decoder", h.n_text_layer)] {
        if part == "decoder" {
            put("decoder.token_embedding.weight".into(), Store::F16, None)?;
            put("decoder.positional_embedding".into(), Store::F32, None)?;
        }
        for i in 0..n_layers {
            let d = format!("{part}.blocks.{i}");
            let mut names: Vec<(String, Store)> = vec![
                (format!("{d}.attn.query.weight"), Store::F16),
                (format!("{d}.attn.query.bias"), Store::F32),
                (format!("{d}.attn.key.weight"), Store::F16),
                (format!("{d}.attn.value.weight"), Store::F16),
                (format!("{d}.attn.value.bias"), Store::F32),
                (format!("{d}.attn.out.weight"), Store::F16),
                (format!("{d}.attn.out.bias"), Store::F32),
                (format!("{d}.attn_ln.weight"), Store::F32),
                (format!("{d}.attn_ln.bias"), Store::F32),
            ];
            if part == "decoder" {
                for n in [
                    "query.weight",
                    "query.bias",
                    "key.weight",
                    "value.weight",
                    "value.bias",
                ] {
                    let store = if n.ends_with("weight") {
                        Store::F16
                    } else {
                        Store::F32
                    };
                    names.push((format!("{d}.cross_attn.{n}"), store));
                }
                names.push((format!("{d}.cross_attn.out.weight"), Store::F16));
                names.push((format!("{d}.cross_attn.out.bias"), Store::F32));
                names.push((format!("{d}.cross_attn_ln.weight"), Store::F32));
                names.push((format!("{d}.cross_attn_ln.bias"), Store::F32));
            }
            for l in ["mlp.0", "mlp.2"] {
                names.push((format!("{d}.{l}.weight"), Store::F16));
                names.push((format!("{d}.{l}.bias"), Store::F32));
            }
            names.push((format!("{d}.mlp_ln.weight"), Store::F32));
            names.push((format!("{d}.mlp_ln.bias"), Store::F32));
            for (n, store) in names {
                put(n, store, None)?;
            }
        }
        let ln = if part == "encoder" {
            "encoder.ln_post"
        } else {
            "decoder.ln"
        };
        put(format!("{ln}.weight"), Store::F32, None)?;
        put(format!("{ln}.bias"), Store::F32, None)?;
    }
    Ok(out)
}

/// Writes a whisper.cpp ggml file: header, mel filterbank, vocabulary, then the tensors.
fn write_model(
    out: &Path,
    vocab_path: &Path,
    hparams: HParams,
    vocab: &[Vec<u8>],
    tensors: &[OutTensor],
    mut progress: impl FnMut(usize, usize),
) -> Result<(), ModelError> {
    if vocab.len() > hparams.n_vocab as usize {
        return Err(ModelError::Format {
            path: vocab_path.to_path_buf(),
            reason: format!(
                "{} tokens for a model with n_vocab {}: the wrong tokenizer for this model \
                 (English .en models and multilingual ones have different vocabularies)",
                vocab.len(),
                hparams.n_vocab
            ),
        });
    }
    let tmp = TempOut::new(out)?;
    let mut w = BufWriter::new(&tmp.file);
    let write = |w: &mut BufWriter<&File>, b: &[u8]| {
        w.write_all(b).map_err(|e| ModelError::io(&tmp.path, e))
    };
    write(&mut w, &MAGIC.to_le_bytes())?;
    for v in hparams.to_array() {
        write(&mut w, &v.to_le_bytes())?;
    }
    let n_mels = hparams.n_mels as usize;
    write(&mut w, &(n_mels as i32).to_le_bytes())?;
    write(&mut w, &(N_FFT_BINS as i32).to_le_bytes())?;
    for v in mel_filterbank(n_mels) {
        write(&mut w, &v.to_le_bytes())?;
    }
    write(&mut w, &(vocab.len() as i32).to_le_bytes())?;
    for token in vocab {
        write(&mut w, &(token.len() as i32).to_le_bytes())?;
        write(&mut w, token)?;
    }
    let total = tensors.len();
    for (done, t) in tensors.iter().enumerate() {
        if !matches!(t.src.dtype, DType::F16 | DType::BF16 | DType::F32) {
            return Err(ModelError::Format {
                path: out.to_path_buf(),
                reason: format!(
                    "tensor {} is {:?}: only float16/bfloat16/float32 convert",
                    t.name, t.src.dtype
                ),
            });
        }
        let n: usize = t.dims.iter().product();
        if n * t.src.dtype.size_bytes() != t.src.data.len() {
            return Err(ModelError::Format {
                path: out.to_path_buf(),
                reason: format!(
                    "tensor {} has {:?} but {} bytes",
                    t.name,
                    t.dims,
                    t.src.data.len()
                ),
            });
        }
        let ggml_type: i32 = if t.store == Store::F32 { 0 } else { 1 };
        write(&mut w, &(t.dims.len() as i32).to_le_bytes())?;
        write(&mut w, &(t.name.len() as i32).to_le_bytes())?;
        write(&mut w, &ggml_type.to_le_bytes())?;
        for &d in t.dims.iter().rev() {
            write(&mut w, &(d as i32).to_le_bytes())?;
        }
        write(&mut w, t.name.as_bytes())?;
        match (t.store, t.src.dtype) {
            (Store::F16, DType::F16) | (Store::F32, DType::F32) => write(&mut w, t.src.data)?,
            (Store::F32, _) => {
                for i in 0..n {
                    write(&mut w, &src_f32(&t.src, i).to_le_bytes())?;
                }
            }
            (Store::F16, _) => {
                for i in 0..n {
                    write(&mut w, &f16::from_f32(src_f32(&t.src, i)).to_le_bytes())?;
                }
            }
        }
        progress(done + 1, total);
    }
    w.flush().map_err(|e| ModelError::io(&tmp.path, e))?;
    drop(w);
    tmp.persist()
}

/// A file written beside its final name and renamed into place only when complete, so an
/// interrupted conversion never leaves a half model under the real name.
pub struct TempOut {
    pub path: PathBuf,
    pub file: File,
    target: PathBuf,
    done: bool,
}

impl TempOut {
    pub fn new(target: &Path) -> Result<Self, ModelError> {
        let dir = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let path = dir.join(format!(".{name}.{}.partial", std::process::id()));
        let file = File::create(&path).map_err(|e| ModelError::io(&path, e))?;
        Ok(Self {
            path,
            file,
            target: target.to_path_buf(),
            done: false,
        })
    }

    pub fn persist(mut self) -> Result<(), ModelError> {
        self.file
            .sync_all()
            .map_err(|e| ModelError::io(&self.path, e))?;
        std::fs::rename(&self.path, &self.target).map_err(|e| ModelError::io(&self.target, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_covers_all_bytes() {
        let d = byte_level_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(d[&'Ġ'], b' ');
        assert_eq!(d[&'a'], b'a');
        assert_eq!(d[&'Ċ'], b'\n');
    }

    #[test]
    fn mel_filterbank_matches_librosa_shape() {
        let f = mel_filterbank(80);
        assert_eq!(f.len(), 80 * N_FFT_BINS);
        // Each Slaney-normalised triangle has area ≈ 1 in Hz; every filter is non-empty.
        for row in f.chunks(N_FFT_BINS) {
            assert!(row.iter().any(|&v| v > 0.0));
        }
        // librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[0][1] = 0.02486259
        assert!((f[1] - 0.024_862_59).abs() < 1e-6, "{}", f[1]);
    }
}
