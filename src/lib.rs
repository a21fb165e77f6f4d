//! sotto: a voice agent that runs entirely on the user's machine and only loads models that
//! are truly open.
//!
//! Pipeline: microphone → ring buffer → 16 kHz → voice activity detection → Whisper → on-device
//! LLM → Piper TTS → speaker. One module per stage; `models` verifies and imports the weights,
//! `audit` decides whether they may load at all; `cli` is the binary's shell.

pub mod agent;
pub mod audio;
pub mod audit;
pub mod capture;
pub mod chunker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cpu;
pub mod desktop;
pub mod dictation;
pub mod hotkey;
pub mod llm;
pub mod memory;
pub mod models;
pub mod pipeline;
pub mod playback;
pub mod ptt;
pub mod service;
pub mod settings;
pub mod stt;
pub mod transcript;
pub mod tts;
pub mod vad;
pub mod wyoming;
