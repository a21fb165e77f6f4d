//! Builds a Hugging Face `tokenizer.json` for a GGUF model from the tokenizer it embeds.
//!
//! The SmolLM2 GGUF ships no tokenizer.json; its vocabulary, merges and token types are in the
//! metadata (`tokenizer.ggml.*`). `tokenizer.ggml.model = gpt2` means byte-level BPE; the `smollm`
//! pre-tokenizer splits digits individually and adds no prefix space. Control tokens (type 3)
//! become special added tokens so `<|im_start|>` encodes as one id.

use serde_json::{Value as Json, json};

use super::ModelError;
use super::gguf::Header;
use std::path::Path;

const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Returns the tokenizer.json document for the GGUF header read from `path`.
pub fn tokenizer_json(path: &Path, header: &Header) -> Result<Json, ModelError> {
    let bad = |reason: String| ModelError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let model = header.get_str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(bad(format!(
            "tokenizer.ggml.model is {model:?}; only byte-level BPE (gpt2) can be rebuilt"
        )));
    }
    let tokens = header
        .get_strings("tokenizer.ggml.tokens")
        .ok_or_else(|| bad("no tokenizer.ggml.tokens string array".into()))?;
    let merges = header
        .get_strings("tokenizer.ggml.merges")
        .ok_or_else(|| bad("no tokenizer.ggml.merges string array".into()))?;
    let types: Vec<u64> = match header
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(bad(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let pre = header.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let digits_individually = matches!(pre, "smollm" | "llama3" | "llama-bpe" | "default");

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
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}
