//! The on-device LLM (SmolLM2-135M-Instruct Q4_1): prefill of a 43-token prompt and greedy
//! decoding of 32 tokens, from an empty KV cache each time.
//!
//! `cargo bench --bench llm` runs criterion. `cargo bench --bench llm -- --serve` loads the
//! model once and answers one JSON request per stdin line with one measured run
//! (`{"prompt": "...", "tokens": 64}` → prefill and decode times): scripts/compare_llm.py uses
//! it to interleave sotto and llama.cpp run by run. Threads: `SOTTO_BENCH_THREADS` (default:
//! all cores).

use std::io::BufRead;
use std::sync::atomic::AtomicBool;

use criterion::Criterion;
use sotto::audit::{self, AuditContext};
use sotto::llm::{GenParams, Llm};
use sotto::models::{self, ModelsDir};

fn threads() -> usize {
    std::env::var("SOTTO_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(sotto::stt::default_threads)
}

fn load() -> Llm {
    let models = ModelsDir::resolve(None);
    let policy = audit::Policy::default();
    let mut ctx = AuditContext::new(&models.root);
    let pass = audit::gate(&mut ctx, &policy, &["smollm2-135m-instruct"])
        .expect("run scripts/setup first")
        .expect("SmolLM2 is open source");
    Llm::load(
        &pass,
        &models.path(models::SMOLLM2_GGUF),
        &models.path(models::SMOLLM2_TOKENIZER),
        Some(sotto::llm::DEFAULT_SYSTEM_PROMPT.into()),
        threads(),
    )
    .expect("run scripts/setup first")
}

fn greedy(max_tokens: usize) -> GenParams {
    GenParams {
        temperature: 0.0,
        repeat_penalty: 1.0,
        max_tokens,
        ..GenParams::default()
    }
}

#[derive(serde::Deserialize)]
struct Request {
    prompt: String,
    tokens: usize,
}

fn serve() {
    let mut llm = load();
    let cancel = AtomicBool::new(false);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
                continue;
            }
        };
        llm.reset();
        let r = llm
            .respond(&req.prompt, &greedy(req.tokens), &cancel, |_| {})
            .expect("generation");
        println!(
            "{}",
            serde_json::json!({
                "prompt_tokens": r.prefilled_tokens,
                "prefill_s": r.prefill.as_secs_f64(),
                "tokens": r.tokens,
                "decode_s": r.decode.as_secs_f64(),
                "threads": threads(),
                "text": r.text,
            })
        );
    }
}

/// Throughput of each kernel, for one token (decoding: a matrix-vector product) and for the
/// 43 tokens of a prompt (prefill), on a matrix that fits in cache and on one that does not
/// (decoding streams the whole model from memory for every token).
fn kernels() {
    use sotto::llm::quant::{self, ActBlock, Isa, OutPtr, QK, QMatrix, WeightType};
    for (rows, cols) in [(1536usize, 576usize), (49152, 576)] {
        for ty in [WeightType::Q4_1, WeightType::Q8_0] {
            let bytes = rows * cols / QK * ty.block_bytes();
            // Varied quants with sane f16 scales (0.01; Q4_1's minimum −0.1) in every block.
            let mut data: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
            for blk in data.chunks_exact_mut(ty.block_bytes()) {
                blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                if ty == WeightType::Q4_1 {
                    blk[2..4].copy_from_slice(&half::f16::from_f32(-0.1).to_le_bytes());
                }
            }
            let w = QMatrix::new(ty, rows, cols, sotto::llm::arena::Slice::from_vec(data)).unwrap();
            for n_tok in [1usize, 43] {
                let x: Vec<f32> = (0..n_tok * cols).map(|i| (i as f32).sin()).collect();
                let mut act = vec![ActBlock::default(); n_tok * cols / QK];
                quant::quantize_row(&x, &mut act);
                let mut out = vec![0f32; n_tok * rows];
                for isa in Isa::available() {
                    let iters = (200_000_000 / bytes / n_tok).max(3);
                    let t0 = std::time::Instant::now();
                    for _ in 0..iters {
                        // SAFETY: one call at a time writes the whole output.
                        unsafe {
                            let out = OutPtr::new(&mut out, rows);
                            quant::matmul_rows(isa, &w, 0..rows, &act, n_tok, out)
                        };
                    }
                    let s = t0.elapsed().as_secs_f64() / iters as f64;
                    println!(
                        "{ty:?} {rows}x{cols} x{n_tok} {isa:?}: {:.1} us, {:.1} GB/s, {:.1} GMAC/s (one thread)",
                        s * 1e6,
                        bytes as f64 / s / 1e9,
                        (rows * cols * n_tok) as f64 / s / 1e9
                    );
                }
            }
        }
    }
}

fn main() {
    // Malloc set as the sotto binary sets it, so the benches measure what users run.
    sotto::memory::return_large_blocks_to_the_system();
    if std::env::args().any(|a| a == "--serve") {
        serve();
        return;
    }
    if std::env::args().any(|a| a == "--kernels") {
        kernels();
        return;
    }
    let mut llm = load();
    let cancel = AtomicBool::new(false);
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("llm");
    group.bench_function("smollm2_135m_q4_1_prefill_43", |b| {
        b.iter(|| {
            llm.reset();
            llm.respond(
                "Explain in a few sentences why the sky is blue and why sunsets are red.",
                &greedy(1),
                &cancel,
                |_| {},
            )
            .unwrap()
        })
    });
    group.bench_function("smollm2_135m_q4_1_reply_32_tokens", |b| {
        b.iter(|| {
            llm.reset();
            llm.respond("Explain why the sky is blue.", &greedy(32), &cancel, |_| {})
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();
}
