//! Transcription speed of the imported Whisper tiny.en through whisper-rs.
//!
//! `cargo bench --bench transcribe` runs criterion on jfk.wav (greedy and beam 5).
//! `cargo bench --bench transcribe -- --serve` loads the model once and answers one JSON request
//! per stdin line (`{"wav": "PATH", "beam": 5}`) with one measured transcription:
//! scripts/compare_stt.py uses it to interleave sotto and faster-whisper run by run.
//! Threads: SOTTO_BENCH_THREADS, default all cores. SOTTO_BENCH_STT=NAME measures a model added
//! with `sotto models add` (e.g. a multilingual Whisper) instead of the quick-start tiny.en.

use std::io::BufRead;
use std::path::Path;

use criterion::Criterion;
use sotto::models::{self, ModelsDir};
use sotto::stt::{Stt, SttOptions};

fn threads() -> usize {
    std::env::var("SOTTO_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(sotto::stt::default_threads)
}

fn load() -> Stt {
    let models = ModelsDir::resolve(None);
    let (id, model) = match std::env::var("SOTTO_BENCH_STT") {
        Ok(name) => {
            let (dir, record) = sotto::models::user::find(&name)
                .unwrap_or_else(|| panic!("{name}: not a model added with `sotto models add`"));
            let file = record.files.first().expect("model.toml lists its file");
            (name, dir.join(&file.path))
        }
        Err(_) => (
            "whisper-tiny.en".to_string(),
            models.path(models::WHISPER_GGML),
        ),
    };
    // The engine only loads after the audit; the bench admits open-weight models (a model
    // brought by the user too, when the audit finds it at least open-weight).
    let policy = sotto::audit::Policy {
        minimum: sotto::audit::verdict::Osaid::OpenWeight,
        ..Default::default()
    };
    let mut ctx = sotto::audit::AuditContext::new(&models.root);
    let pass = sotto::audit::gate(&mut ctx, &policy, &[id.as_str()])
        .expect("run scripts/setup first")
        .unwrap_or_else(|_| {
            panic!("{id} is not admitted: the audit does not find it at least open-weight")
        });
    Stt::load(&pass, &model).expect("run scripts/setup first")
}

fn options(beam_size: usize) -> SttOptions {
    SttOptions {
        threads: threads(),
        beam_size,
        ..SttOptions::default()
    }
}

#[derive(serde::Deserialize)]
struct Request {
    wav: std::path::PathBuf,
    beam: usize,
}

fn serve() {
    let mut stt = load();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = serde_json::from_str::<Request>(&line)
            .map_err(|e| e.to_string())
            .and_then(|req| {
                let audio = sotto::audio::read_for_whisper(&req.wav).map_err(|e| e.to_string())?;
                let t0 = std::time::Instant::now();
                let segments = stt
                    .transcribe(&audio.samples, &options(req.beam), None)
                    .map_err(|e| e.to_string())?;
                Ok(serde_json::json!({
                    "seconds": t0.elapsed().as_secs_f64(),
                    "threads": stt.last_threads,
                    "text": sotto::transcript::plain_text(&segments),
                }))
            })
            .unwrap_or_else(|e| serde_json::json!({ "error": e }));
        println!("{answer}");
    }
}

fn main() {
    // Malloc set as the sotto binary sets it, so the benches measure what users run.
    sotto::memory::return_large_blocks_to_the_system();
    if std::env::args().any(|a| a == "--serve") {
        serve();
        return;
    }
    let mut stt = load();
    let jfk = sotto::audio::read_for_whisper(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/jfk.wav"),
    )
    .expect("assets/jfk.wav");
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("transcribe");
    for beam_size in [1, 5] {
        let opts = options(beam_size);
        group.bench_function(
            format!("jfk_11s_tiny.en_beam{beam_size}_threads{}", opts.threads),
            |b| b.iter(|| stt.transcribe(&jfk.samples, &opts, None).unwrap()),
        );
    }
    group.finish();
    c.final_summary();
}
