//! Piper en_US-joe-medium through ONNX Runtime: one sentence, phonemized and synthesized.
//!
//! `cargo bench --bench tts` runs criterion. `cargo bench --bench tts -- --serve` loads (and
//! warms) the voice once and answers one JSON request per stdin line (`{"text": "..."}`) with
//! one measured synthesis, clause by clause as `sotto say` does it (seams closed): time to the first clause's
//! audio, total time and seconds of audio. scripts/compare_tts.py uses it to interleave sotto
//! and piper-tts run by run. The voice's threads spin while they wait (as `sotto say`'s do on an
//! idle machine, see [`tts::Waiting`]); `SOTTO_BENCH_TTS_WAITING=sleep` makes them sleep (as
//! the agent's and `serve`'s do, and `sotto say`'s on a busy machine).

use std::io::BufRead;
use std::time::Instant;

use criterion::Criterion;
use sotto::audit::{self, AuditContext};
use sotto::models::ModelsDir;
use sotto::tts::{self, Tts};

fn load() -> Tts {
    tts::locate_espeak_data();
    let models = ModelsDir::resolve(None);
    let policy = audit::Policy::default();
    let mut ctx = AuditContext::new(&models.root);
    let pass = audit::gate(&mut ctx, &policy, &["piper-en_US-joe-medium"])
        .expect("run scripts/setup first")
        .expect("the joe voice is open source");
    let onnx = models.path("piper-en_US-joe-medium/en_US-joe-medium.onnx");
    let waiting = match std::env::var("SOTTO_BENCH_TTS_WAITING").as_deref() {
        Ok("sleep") => tts::Waiting::Sleep,
        _ => tts::Waiting::Spin,
    };
    Tts::load(
        &pass,
        &onnx,
        &tts::default_runtime_path(&models.root),
        waiting,
    )
    .expect("voice loads")
}

#[derive(serde::Deserialize)]
struct Request {
    text: String,
}

fn serve() {
    let mut voice = load();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => serde_json::json!({ "error": e.to_string() }),
            Ok(req) => {
                let mut chunker = sotto::chunker::Chunker::new();
                let mut clauses = chunker.push_chunks(&req.text);
                clauses.extend(chunker.finish_chunk());
                let t0 = Instant::now();
                let mut first = None;
                let mut audio_s = 0.0;
                let mut seams = tts::Seams::default();
                for clause in &clauses {
                    let mut speech = voice.synthesize(&clause.text, 1.0).expect("synthesis");
                    seams.close(
                        &mut speech.samples,
                        speech.sample_rate_hz,
                        clause.mid_clause,
                    );
                    first.get_or_insert(t0.elapsed());
                    audio_s += speech.samples.len() as f64 / speech.sample_rate_hz as f64;
                }
                serde_json::json!({
                    "first_audio_s": first.unwrap_or_default().as_secs_f64(),
                    "total_s": t0.elapsed().as_secs_f64(),
                    "audio_s": audio_s,
                })
            }
        };
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
    let mut voice = load();
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank.";
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("tts");
    group.bench_function("joe_medium_one_sentence", |b| {
        b.iter(|| voice.synthesize(sentence, 1.0).unwrap())
    });
    // The espeak-ng part of it alone (text to IPA phonemes).
    group.bench_function("phonemize_one_sentence", |b| {
        b.iter(|| tts::phonemize(sentence, "en-us").unwrap())
    });
    group.finish();
    c.final_summary();
}
