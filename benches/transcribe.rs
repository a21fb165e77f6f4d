//! Transcription speed of the imported Whisper tiny.en through whisper-rs.
//!
//! Run: `cargo bench --bench transcribe` (after scripts/setup). Threads: SOTTO_BENCH_THREADS,
//! default all cores. The side-by-side comparison with faster-whisper on the same weights is
//! scripts/compare_stt.py.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto::models::{self, ModelsDir};
use sotto::stt::{Stt, SttOptions};

fn bench(c: &mut Criterion) {
    let models = ModelsDir::resolve(None);
    let model = models.path(models::WHISPER_GGML);
    // The engine only loads after the audit; the bench admits open-weight models.
    let config =
        sotto::config::Config::parse(Path::new("bench"), "[audit]\npolicy = \"open-weight\"\n")
            .expect("valid bench config");
    let mut ctx = sotto::audit::AuditContext::new(&models.root);
    let pass = sotto::audit::gate(&mut ctx, &config, &["whisper-tiny.en"])
        .expect("run scripts/setup first")
        .expect("whisper-tiny.en is open-weight");
    let stt = Stt::load(&pass, &model).expect("run scripts/setup first");
    let jfk = sotto::audio::read_for_whisper(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/jfk.wav"),
    )
    .expect("assets/jfk.wav");
    let threads = std::env::var("SOTTO_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(sotto::stt::default_threads);
    let mut group = c.benchmark_group("transcribe");
    group.sample_size(10);
    for beam_size in [1, 5] {
        let opts = SttOptions {
            threads,
            beam_size,
            ..SttOptions::default()
        };
        group.bench_function(
            format!("jfk_11s_tiny.en_beam{beam_size}_threads{threads}"),
            |b| b.iter(|| stt.transcribe(&jfk.samples, &opts, None).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
