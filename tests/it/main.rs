//! sotto's integration tests: one binary, shared helpers in `util`.
//!
//! They run the real `sotto` binary on real models (fetched by scripts/setup) and real speech
//! (../shared/fixtures/jfk.wav, espeak-ng speech made at test time). A missing model or tool
//! fails the test with what to run, never skips it.

mod util;

mod agent;
mod audit;
mod byo;
mod dictation;
mod fetch;
mod fuzz;
mod llm;
mod models;
mod serve;
mod service;
mod speech;
mod transcribe;
mod vad;
