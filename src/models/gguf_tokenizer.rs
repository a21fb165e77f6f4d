//! Builds a Hugging Face `tokenizer.json` for a GGUF model from the tokenizer it embeds.
//!
//! A GGUF ships no tokenizer.json; its vocabulary, token types and merges or scores are in the
//! metadata (`tokenizer.ggml.*`). Two kinds are rebuilt:
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE (SmolLM2, Llama 3). The `smollm` pre-tokenizer
//!   splits digits individually and adds no prefix space.
//! - `tokenizer.ggml.model = llama`: SentencePiece BPE (Llama 2, TinyLlama, Mistral, Phi-3).
//!   SentencePiece merges the adjacent pair whose joined piece scores highest; the same order
//!   is written as BPE merges ranked by that score (as `transformers` converts Llama's
//!   tokenizer.model), spaces become `▁`, one `▁` is prepended to text unless the GGUF says
//!   `add_space_prefix = false`, and characters outside the vocabulary fall back to the
//!   `<0xNN>` byte tokens.
//!
//! Control tokens (type 3) become special added tokens so `<|im_start|>` or `</s>` encodes as
//! one id.

use serde_json::{Value as Json, json};

use super::ModelError;
use super::gguf::Header;
use std::path::Path;

const TOKEN_TYPE_NORMAL: u64 = 1;
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Returns the tokenizer.json document for the GGUF header read from `path`.
pub fn tokenizer_json(path: &Path, header: &Header) -> Result<Json, ModelError> {
    let bad = |reason: String| ModelError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let model = header.get_str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" && model != "llama" {
        return Err(bad(format!(
            "tokenizer.ggml.model is {model:?}; only byte-level BPE (gpt2) and SentencePiece \
             (llama) tokenizers can be rebuilt"
        )));
    }
    let tokens = header
        .get_strings("tokenizer.ggml.tokens")
        .ok_or_else(|| bad("no tokenizer.ggml.tokens string array".into()))?;
    let types: Vec<u64> = match header
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a
            .iter()
            .map(|v| v.as_u64().unwrap_or(TOKEN_TYPE_NORMAL))
            .collect(),
        None => vec![TOKEN_TYPE_NORMAL; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(bad(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(tok.to_string(), json!(id));
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id,
                "content": tok,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": ty == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    let unk = header
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.as_u64())
        .and_then(|i| tokens.get(i as usize))
        .map(|t| json!(t))
        .unwrap_or(Json::Null);
    if model == "llama" {
        let scores: Vec<f64> = header
            .get("tokenizer.ggml.scores")
            .and_then(|v| v.as_array())
            .ok_or_else(|| bad("a SentencePiece tokenizer without tokenizer.ggml.scores".into()))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(0.0))
            .collect();
        if scores.len() != tokens.len() {
            return Err(bad(format!(
                "{} token scores for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let add_space_prefix = header
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        return Ok(sentencepiece_json(
            &tokens,
            &types,
            &scores,
            vocab,
            added,
            unk,
            add_space_prefix,
        ));
    }
    let merges = header
        .get_strings("tokenizer.ggml.merges")
        .ok_or_else(|| bad("no tokenizer.ggml.merges string array".into()))?;
    let pre = header.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let digits_individually = matches!(pre, "smollm" | "llama3" | "llama-bpe" | "default");

    let byte_level = json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    let pre_tokenizer = if digits_individually {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level,
        ]})
    } else {
        byte_level
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true
        },
        "decoder": {
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true
        },
        "model": bpe_model(vocab, json!(merges), unk, false),
    }))
}

/// The BPE model of a tokenizer.json; `sentencepiece` fuses unknown pieces and falls back
/// to the `<0xNN>` byte tokens.
fn bpe_model(
    vocab: serde_json::Map<String, Json>,
    merges: Json,
    unk: Json,
    sentencepiece: bool,
) -> Json {
    json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": sentencepiece,
        "byte_fallback": sentencepiece,
        "ignore_merges": false,
        "vocab": vocab,
        "merges": merges,
    })
}

/// SentencePiece BPE as Hugging Face `tokenizers` runs it (what `transformers` writes for
/// Llama's tokenizer.model): every way a normal piece splits into two pieces of the vocabulary
/// is a merge, ranked by the joined piece's score (highest first), so merging the best-ranked
/// pair first is SentencePiece's "join the adjacent pair whose result scores highest".
fn sentencepiece_json(
    tokens: &[&str],
    types: &[u64],
    scores: &[f64],
    vocab: serde_json::Map<String, Json>,
    added: Vec<Json>,
    unk: Json,
    add_space_prefix: bool,
) -> Json {
    let ids: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    // (score of the joined piece, left id, right id), best first.
    let mut merges: Vec<(f64, usize, usize, usize, usize)> = Vec::new();
    for (id, &piece) in tokens.iter().enumerate() {
        if types[id] != TOKEN_TYPE_NORMAL && types[id] != TOKEN_TYPE_USER_DEFINED {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                merges.push((scores[id], id, li, ri, cut));
            }
        }
    }
    // transformers' order: score descending, then the shorter left piece, then by ids.
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.4.cmp(&b.4))
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    let merges: Vec<Json> = merges
        .iter()
        .map(|&(_, _, l, r, _)| json!([tokens[l], tokens[r]]))
        .collect();
    let replace_space =
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space_prefix {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            replace_space,
        ]})
    } else {
        replace_space
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": bpe_model(vocab, json!(merges), unk, true),
    })
}
