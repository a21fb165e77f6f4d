//! The on-device LLM (SmolLM2-135M-Instruct through candle) on the real model.

use std::sync::atomic::{AtomicBool, Ordering};

use sotto::audit::{self, AuditContext, identity::HashCache};
use sotto::config::Config;
use sotto::llm::{GenParams, Llm, StopReason};

use crate::util::*;

fn load() -> Llm {
    let gguf = model(sotto::models::SMOLLM2_GGUF);
    let tokenizer = model(sotto::models::SMOLLM2_TOKENIZER);
    let config = Config::parse(std::path::Path::new("test"), "").unwrap();
    let mut ctx = AuditContext {
        models_dir: models_dir(),
        cache: HashCache::in_memory(),
    };
    let pass = audit::gate(&mut ctx, &config, &["smollm2-135m-instruct"])
        .unwrap()
        .expect("SmolLM2 passes the default policy");
    Llm::load(
        &pass,
        &gguf,
        &tokenizer,
        Some(sotto::llm::DEFAULT_SYSTEM_PROMPT.into()),
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
