//! SmolLM2-135M-Instruct through candle: one greedy reply of 32 tokens to a fixed prompt
//! (prefill of the whole prompt + decode), KV cache cleared between iterations.
//!
//! Run: `cargo bench --bench llm` (after scripts/setup). Side by side with llama.cpp:
//! scripts/compare_llm.py.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto::audit::{self, AuditContext};
use sotto::config::Config;
use sotto::llm::{GenParams, Llm};
use sotto::models::{self, ModelsDir};

fn bench(c: &mut Criterion) {
    let models = ModelsDir::resolve(None);
    let config = Config::parse(Path::new("bench"), "").expect("default config");
    let mut ctx = AuditContext::new(&models.root);
    let pass = audit::gate(&mut ctx, &config, &["smollm2-135m-instruct"])
        .expect("run scripts/setup first")
        .expect("SmolLM2 is open source");
    let mut llm = Llm::load(
        &pass,
        &models.path(models::SMOLLM2_GGUF),
        &models.path(models::SMOLLM2_TOKENIZER),
        Some(sotto::llm::DEFAULT_SYSTEM_PROMPT.into()),
    )
    .expect("run scripts/setup first");
    let params = GenParams {
        temperature: 0.0,
        max_tokens: 32,
        ..GenParams::default()
    };
    let cancel = AtomicBool::new(false);
    let mut group = c.benchmark_group("llm");
    group.sample_size(10);
    group.bench_function("smollm2_135m_q4_1_reply_32_tokens", |b| {
        b.iter(|| {
            llm.reset();
            llm.respond("Explain why the sky is blue.", &params, &cancel, |_| {})
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
