//! sotto: a voice agent that runs entirely on the user's machine and only loads models that
//! are truly open.
//!
//! Pipeline: microphone → ring buffer → 16 kHz → voice activity detection → Whisper → on-device
//! LLM → Piper TTS → speaker. One module per stage; `models` fetches-verifies-imports the
//! weights; `cli` is the binary's shell.

pub mod audio;
pub mod cli;
pub mod models;
pub mod stt;
pub mod transcript;
