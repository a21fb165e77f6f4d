//! Piper en_US-joe-medium through ONNX Runtime: one sentence, phonemized and synthesized.
//!
//! Run: `cargo bench --bench tts` (after scripts/setup). Side by side with piper-tts:
//! scripts/compare_tts.py.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto::audit::{self, AuditContext};
use sotto::config::Config;
use sotto::models::ModelsDir;
use sotto::tts::{self, Tts};

fn bench(c: &mut Criterion) {
    tts::locate_espeak_data();
    let models = ModelsDir::resolve(None);
    let config = Config::parse(Path::new("bench"), "").expect("default config");
    let mut ctx = AuditContext::new(&models.root);
    let pass = audit::gate(&mut ctx, &config, &["piper-en_US-joe-medium"])
        .expect("run scripts/setup first")
        .expect("the joe voice is open source");
    let onnx = models.path("piper-en_US-joe-medium/en_US-joe-medium.onnx");
    let mut voice =
        Tts::load(&pass, &onnx, &tts::default_runtime_path(&models.root)).expect("voice loads");
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank.";
    let mut group = c.benchmark_group("tts");
    group.sample_size(10);
    group.bench_function("joe_medium_one_sentence", |b| {
        b.iter(|| voice.synthesize(sentence, 1.0).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
