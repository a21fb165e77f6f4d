//! The model importer on the real fetched files.

use sotto::models::{self, whisper_ggml};

use crate::util::*;

#[test]
fn converted_whisper_header_matches_tiny_en() {
    let path = model(models::WHISPER_GGML);
    let h = whisper_ggml::Header::read(&path).unwrap();
    let hp = h.hparams;
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_audio_ctx,
            hp.n_audio_state,
            hp.n_audio_head,
            hp.n_audio_layer
        ),
        (51864, 1500, 384, 6, 4)
    );
    assert_eq!(
        (
            hp.n_text_ctx,
            hp.n_text_state,
            hp.n_text_head,
            hp.n_text_layer,
            hp.n_mels,
            hp.ftype
        ),
        (448, 384, 6, 4, 80, 1)
    );
    assert_eq!(h.n_mel_filters, 80);
    assert_eq!(h.n_vocab_tokens, 50257);
    let shape = |name: &str| {
        h.tensor(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .dims
            .clone()
    };
    assert_eq!(shape("encoder.conv1.weight"), [384, 80, 3]);
    assert_eq!(shape("encoder.conv1.bias"), [384, 1]);
    assert_eq!(shape("encoder.positional_embedding"), [1500, 384]);
    assert_eq!(shape("decoder.token_embedding.weight"), [51864, 384]);
    assert_eq!(shape("decoder.positional_embedding"), [448, 384]);
    for i in 0..4 {
        for part in ["encoder", "decoder"] {
            assert_eq!(
                shape(&format!("{part}.blocks.{i}.attn.query.weight")),
                [384, 384]
            );
            assert_eq!(
                shape(&format!("{part}.blocks.{i}.attn.key.weight")),
                [384, 384]
            );
            assert_eq!(
                shape(&format!("{part}.blocks.{i}.mlp.0.weight")),
                [1536, 384]
            );
            assert!(
                h.tensor(&format!("{part}.blocks.{i}.attn.key.bias"))
                    .is_none()
            );
        }
        assert_eq!(
            shape(&format!("decoder.blocks.{i}.cross_attn.key.weight")),
            [384, 384]
        );
        assert_eq!(
            shape(&format!("decoder.blocks.{i}.cross_attn.value.bias")),
            [384]
        );
    }
    // 4 encoder blocks × 15 + 4 decoder blocks × 24 + 11 others, as in openai-whisper.
    assert_eq!(h.tensors.len(), 4 * 15 + 4 * 24 + 11);
    // f32 for 1-D tensors, conv biases and positional tables; f16 for the rest.
    for t in &h.tensors {
        let want_f32 = t.dims.len() < 2
            || t.name.ends_with("conv1.bias")
            || t.name.ends_with("conv2.bias")
            || t.name.ends_with("positional_embedding");
        assert_eq!(t.ggml_type, if want_f32 { 0 } else { 1 }, "{}", t.name);
    }
}

#[test]
fn converting_twice_gives_identical_bytes_equal_to_the_pin() {
    let ct2 = models_dir().join(models::WHISPER_CT2_DIR);
    model(&format!("{}/model.bin", models::WHISPER_CT2_DIR));
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    whisper_ggml::convert_ct2(&ct2, &a, |_, _| {}).unwrap();
    whisper_ggml::convert_ct2(&ct2, &b, |_, _| {}).unwrap();
    let (ha, hb) = (
        models::sha256_file(&a).unwrap(),
        models::sha256_file(&b).unwrap(),
    );
    assert_eq!(ha, hb);
    let pin = models::pins()
        .into_iter()
        .find(|p| p.dest == models::WHISPER_GGML)
        .unwrap();
    assert_eq!(ha, pin.sha256);
    assert_eq!(std::fs::metadata(&a).unwrap().len(), 77_704_715);
    // No temporary files are left beside the outputs.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn smollm2_tokenizer_rebuilt_from_the_gguf_encodes_chatml() {
    let path = model(models::SMOLLM2_TOKENIZER);
    let tok = tokenizers::Tokenizer::from_file(&path).unwrap();
    let ids = tok
        .encode("<|im_start|>system\n", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, [1, 9690, 198]);
    // Digits are split individually, as SmolLM2 was trained.
    let ids = tok.encode("2024", false).unwrap();
    assert_eq!(ids.get_ids().len(), 4);
    for text in [
        "Grüße, 世界! 🎉 naïve café",
        "tab\tand\nnewline  spaces",
        "<|im_end|> after",
    ] {
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn models_list_shows_every_quick_start_file_verified() {
    model(models::WHISPER_GGML);
    let out = run(sotto().args(["models", "list"]));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for dest in [
        models::WHISPER_GGML,
        models::SMOLLM2_GGUF,
        "piper-en_US-joe-medium/en_US-joe-medium.onnx",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(dest))
            .unwrap_or_else(|| panic!("{dest}\n{text}"));
        assert!(line.ends_with(" ok"), "{line}");
    }
}

#[test]
fn import_is_idempotent_and_reports_sources() {
    model(models::WHISPER_GGML);
    let out = run(sotto().args(["models", "import"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("up to date whisper-tiny.en/ggml-tiny.en.bin"),
        "{text}"
    );
    assert!(
        text.contains("from whisper-tiny.en-ct2/model.bin (sha256 1a5afae06a4db91c)"),
        "{text}"
    );
}
