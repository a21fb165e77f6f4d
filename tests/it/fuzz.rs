//! Replays every input kept in tests/fixtures/fuzz/TARGET/ (seeds, and any crash scripts/fuzz
//! found, once fixed) through the function its fuzz target calls: each must give a value or
//! an error, never a panic.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn every_kept_fuzz_input_is_a_value_or_an_error() {
    for (name, data) in inputs("wav") {
        if let Ok(clip) = sotto::audio::decode_wav(Path::new(&name), &data)
            && clip.samples.len() <= 1 << 16
        {
            let _ = sotto::audio::resample(&clip.samples, clip.sample_rate_hz, 16_000);
        }
    }
    for (_, data) in inputs("wyoming_event") {
        sotto::wyoming::protocol::read_all(&data);
    }
    for (_, data) in inputs("onnx_split") {
        for weights_file in [None, Some("voice.onnx")] {
            let _ = sotto::tts::graph::split(&data, weights_file);
        }
    }
    for (_, data) in inputs("gguf_header") {
        let _ = sotto::models::gguf::Header::parse(&data, data.len() as u64);
    }
    for (name, data) in inputs("whisper_ggml_header") {
        let _ = sotto::models::whisper_ggml::Header::parse(
            Path::new(&name),
            &mut std::io::Cursor::new(&data),
            data.len() as u64,
        );
    }
    for (name, data) in inputs("manifest") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(m) = sotto::audit::manifest::Manifest::parse(&name, text)
        {
            let _ = sotto::audit::verdict::judge(&m, &Default::default());
        }
    }
    for (name, data) in inputs("config") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(file) = sotto::config::ConfigFile::parse(Path::new(&name), text)
        {
            let _ = sotto::settings::Settings::resolve(&file, &Default::default());
        }
    }
    for (name, data) in inputs("commands") {
        let (file, said) = data.split_at(data.len() / 2);
        let said = String::from_utf8_lossy(said);
        let _ = sotto::commands::read_reply(&said, "Shall I do it?");
        if let Ok(text) = std::str::from_utf8(file)
            && let Ok(c) = sotto::commands::Commands::parse(Path::new(&name), text)
        {
            let _ = c.match_transcript(&said);
        }
    }
}
