//! The on-device LLM (SmolLM2-135M-Instruct on sotto's own forward pass) on the real model.

use std::sync::atomic::{AtomicBool, Ordering};

use sotto::audit::{self, AuditContext, identity::HashCache};
use sotto::llm::{GenParams, Llm, StopReason};

use crate::util::*;

fn load() -> Llm {
    load_with(sotto::stt::default_threads())
}

fn load_with(threads: usize) -> Llm {
    let gguf = model(sotto::models::SMOLLM2_GGUF);
    let tokenizer = model(sotto::models::SMOLLM2_TOKENIZER);
    let policy = audit::Policy::default();
    let mut ctx = AuditContext {
        models_dir: models_dir(),
        cache: HashCache::in_memory(),
    };
    let pass = audit::gate(&mut ctx, &policy, &["smollm2-135m-instruct"])
        .unwrap()
        .expect("SmolLM2 passes the default policy");
    Llm::load(
        &pass,
        &gguf,
        &tokenizer,
        Some(sotto::llm::DEFAULT_SYSTEM_PROMPT.into()),
        threads,
    )
    .unwrap()
}

fn greedy(max_tokens: usize) -> GenParams {
    GenParams {
        temperature: 0.0,
        max_tokens,
        ..GenParams::default()
    }
}

#[test]
fn the_capital_of_france_is_paris() {
    let mut llm = load();
    let mut streamed = String::new();
    let reply = llm
        .respond(
            "What is the capital of France?",
            &greedy(48),
            &AtomicBool::new(false),
            |p| streamed.push_str(p),
        )
        .unwrap();
    assert!(reply.text.contains("Paris"), "{:?}", reply.text);
    assert_eq!(streamed, reply.text, "what was streamed is the reply");
    assert_eq!(reply.stop, StopReason::EndOfTurn, "{:?}", reply.text);
}

#[test]
fn seeded_sampling_is_deterministic() {
    let params = GenParams {
        temperature: 0.9,
        top_p: Some(0.95),
        seed: 42,
        max_tokens: 24,
        ..GenParams::default()
    };
    let mut llm = load();
    let cancel = AtomicBool::new(false);
    let a = llm
        .respond("Tell me about cats.", &params, &cancel, |_| {})
        .unwrap();
    llm.reset();
    let b = llm
        .respond("Tell me about cats.", &params, &cancel, |_| {})
        .unwrap();
    assert_eq!(a.text, b.text);
    assert!(!a.text.is_empty());
}

#[test]
fn cancellation_stops_within_one_token() {
    let mut llm = load();
    let cancel = AtomicBool::new(false);
    let mut pieces = 0;
    let reply = llm
        .respond(
            "Write a long story about a dragon.",
            &greedy(200),
            &cancel,
            |_| {
                pieces += 1;
                cancel.store(true, Ordering::Relaxed);
            },
        )
        .unwrap();
    assert_eq!(reply.stop, StopReason::Cancelled);
    assert_eq!(reply.tokens, 1, "cancelled after the first token");
    assert_eq!(pieces, 1);
}

#[test]
fn max_tokens_is_honoured() {
    let mut llm = load();
    let reply = llm
        .respond(
            "Write a long story about a dragon.",
            &greedy(7),
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap();
    assert_eq!(reply.stop, StopReason::MaxTokens);
    assert_eq!(reply.tokens, 7);
}

#[test]
fn a_conversation_reuses_the_kv_cache_and_answers_as_without_it() {
    let cancel = AtomicBool::new(false);
    let turns = ["Hello, my name is Ada.", "What is my name?"];
    // With reuse: the second turn prefills only what the conversation added.
    let mut a = load();
    let first = a.respond(turns[0], &greedy(128), &cancel, |_| {}).unwrap();
    assert_eq!(first.stop, StopReason::EndOfTurn, "{:?}", first.text);
    let second = a.respond(turns[1], &greedy(24), &cancel, |_| {}).unwrap();
    assert!(
        second.prefilled_tokens < second.prompt_tokens / 2,
        "only the new turn is prefilled: {} of {}",
        second.prefilled_tokens,
        second.prompt_tokens
    );
    assert_eq!(a.history().len(), 4);
    // Without: the same conversation, the cache dropped before the second turn.
    let mut b = load();
    b.respond(turns[0], &greedy(128), &cancel, |_| {}).unwrap();
    b.forget_kv_cache();
    let again = b.respond(turns[1], &greedy(24), &cancel, |_| {}).unwrap();
    assert_eq!(again.prefilled_tokens, again.prompt_tokens);
    assert_eq!(second.text, again.text);
}

#[test]
fn chat_command_streams_a_reply() {
    model(sotto::models::SMOLLM2_GGUF);
    let out = run(sotto().args([
        "chat",
        "--temperature",
        "0",
        "What is the capital of France?",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Paris"), "{}", stdout(&out));
}

#[test]
fn command_routing_only_ever_answers_one_of_the_options_or_none() {
    let mut llm = load();
    let options: Vec<String> = ["turn on the lamp", "turn off the lamp", "open the window"]
        .map(String::from)
        .to_vec();
    let mut picks = Vec::new();
    for request in [
        "could you maybe switch the lamp on",
        "make it dark, lamp off",
        "let some fresh air in through the window",
        "what is the capital of France",
    ] {
        let pick = llm.choose(request, &options).unwrap();
        assert!(pick.is_none_or(|i| i < options.len()), "{pick:?}");
        picks.push(pick);
    }
    eprintln!("routing picks: {picks:?}");
    assert_eq!(picks[3], None, "an unrelated request picks no command");
    // The conversation is untouched and the next turn still works.
    let cancel = AtomicBool::new(false);
    let reply = llm
        .respond(
            "What is the capital of France?",
            &greedy(24),
            &cancel,
            |_| {},
        )
        .unwrap();
    assert!(reply.text.contains("Paris"), "{}", reply.text);
}

/// Greedy replies (16 tokens, no repetition penalty) of llama.cpp to five prompts on the same
/// GGUF, sotto's default system prompt: the reference implementation's output, recorded with
/// llama-cpp-python 0.3.36 (`scripts/compare_llm.py` has the same prompt format). candle, the
/// previous engine, agreed on two of the five with sotto's default repetition penalty and
/// differed after 6–11 tokens on the others: it keeps its KV cache in f32 where llama.cpp and
/// sotto keep f16, and greedy decoding follows such near-ties either way.
const LLAMA_CPP_GREEDY: [(&str, &str); 5] = [
    (
        "What is the capital of France?",
        "The capital of France is Paris.",
    ),
    (
        "Explain why the sky is blue.",
        "The sky is blue because of a process called Rayleigh scattering, which occurs when",
    ),
    (
        "Write a haiku about autumn leaves.",
        "In the heart of the autumn leaves, a delicate thread of life, a fleeting",
    ),
    ("How many legs does a spider have?", "A spider has 8 legs."),
    (
        "Give me three tips for learning to cook.",
        "1. Start with the basics: Learn the basics of cooking, like what goes",
    ),
];

#[test]
fn greedy_replies_agree_with_llama_cpp_token_for_token_on_one_and_two_threads() {
    let params = GenParams {
        repeat_penalty: 1.0,
        ..greedy(16)
    };
    let cancel = AtomicBool::new(false);
    for threads in [1, 2] {
        let mut llm = load_with(threads);
        for (prompt, want) in LLAMA_CPP_GREEDY {
            llm.reset();
            let reply = llm.respond(prompt, &params, &cancel, |_| {}).unwrap();
            assert_eq!(
                reply.text.trim(),
                want,
                "{threads} threads, prompt {prompt:?}"
            );
        }
    }
}

#[test]
fn perplexity_on_a_fixed_text_matches_llama_cpp() {
    // llama.cpp (llama-cpp-python 0.3.36) on the same GGUF, tokens and 512-token windows:
    // 13.161 over 709 tokens (scripts/compare_llm.py --perplexity).
    let text = std::fs::read_to_string(repo().join("tests/fixtures/text/perplexity.txt")).unwrap();
    let mut llm = load();
    let p = llm.perplexity(&text, 512).unwrap();
    eprintln!("perplexity {:.3} over {} tokens", p.value, p.tokens);
    assert_eq!(p.tokens, 709);
    assert!((p.value - 13.161).abs() < 0.15, "perplexity {:.3}", p.value);
}

#[test]
fn warm_up_keeps_the_system_prompt_so_the_first_turn_prefills_only_its_message() {
    let mut llm = load();
    llm.warm_up().unwrap();
    let reply = llm
        .respond(
            "What is the capital of France?",
            &greedy(24),
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap();
    assert!(reply.text.contains("Paris"), "{}", reply.text);
    assert!(
        reply.prefilled_tokens < reply.prompt_tokens,
        "the system prompt came from the cache: {} of {} prefilled",
        reply.prefilled_tokens,
        reply.prompt_tokens
    );
}
