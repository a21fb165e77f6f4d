//! One client connection: reads its events, submits requests to the engines' queues, writes
//! the replies. Everything a client can get wrong ends here, as an `error` event or a closed
//! connection, never in an engine.

use std::io::BufReader;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::protocol::{self, Event, ProtocolError};
use super::{AsrJob, HandleJob, HandleOut, Shared, Stream, TtsJob, error_event, submit};
use crate::chunker::Chunker;

/// Samples per `audio-chunk` sent back (wyoming-piper's size).
const SAMPLES_PER_CHUNK: usize = 1024;

/// Audio arriving for transcription.
struct Utterance {
    rate: u32,
    width: usize,
    channels: usize,
    /// Mono samples at `rate`.
    samples: Vec<f32>,
}

struct Session<'a> {
    shared: &'a Shared,
    out: Stream,
    gone: Arc<AtomicBool>,
    language: Option<String>,
    vocabulary: Vec<String>,
    utterance: Option<Utterance>,
    /// Set after an over-long utterance was refused: its remaining chunks are dropped.
    discarding: bool,
    /// The sentences of a streamed synthesis (`synthesize-start` … `synthesize-stop`).
    text_stream: Option<Chunker>,
    conversation: Option<String>,
}

/// Marks the session's jobs as abandoned when the connection ends, however it ends.
struct Gone(Arc<AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub(crate) fn run(stream: Stream, shared: &Shared, stop: &AtomicBool) {
    let o = &shared.options;
    if stream
        .set_timeouts(o.idle_timeout, o.write_timeout)
        .is_err()
    {
        return;
    }
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let gone = Arc::new(AtomicBool::new(false));
    let _guard = Gone(gone.clone());
    let mut s = Session {
        shared,
        out: stream,
        gone,
        language: None,
        vocabulary: Vec::new(),
        utterance: None,
        discarding: false,
        text_stream: None,
        conversation: None,
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let event = match protocol::read_event(&mut reader, &o.limits) {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(ProtocolError::Io(e)) => {
                tracing::debug!(stage = "serve", error = %e, "connection closed");
                break;
            }
            Err(e) => {
                // The stream is out of step (or the client sent too much): say why, then close.
                tracing::info!(stage = "serve", error = %e, "bad frame; closing the connection");
                let _ = s.send(&error_event("bad-frame", &e.to_string()));
                break;
            }
        };
        if s.event(event).is_err() {
            break;
        }
    }
    s.out.shutdown();
}

impl Session<'_> {
    fn send(&mut self, event: &Event) -> std::io::Result<()> {
        protocol::write_event(&mut self.out, event)
    }

    /// Handles one event; an error means the client cannot be written to.
    fn event(&mut self, e: Event) -> std::io::Result<()> {
        match e.kind.as_str() {
            "describe" => {
                let info = Event::new("info", self.shared.info.clone());
                self.send(&info)
            }
            "ping" => {
                let text = e.data.get("text").cloned().unwrap_or(Value::Null);
                self.send(&Event::new("pong", json!({ "text": text })))
            }
            // One program per role: any selection is this one.
            "select-program" => Ok(()),
            "transcribe" => {
                self.language = e.str("language").map(str::to_string);
                self.vocabulary = ["transcript_names", "transcript_terms"]
                    .iter()
                    .filter_map(|k| e.data.get(*k)?.as_array().cloned())
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                Ok(())
            }
            "audio-start" => {
                self.discarding = false;
                match audio_format(&e) {
                    Ok((rate, width, channels)) => {
                        self.utterance = Some(Utterance {
                            rate,
                            width,
                            channels,
                            samples: Vec::new(),
                        });
                        Ok(())
                    }
                    Err(msg) => self.send(&error_event("bad-audio", &msg)),
                }
            }
            "audio-chunk" => self.audio_chunk(&e),
            "audio-stop" => self.audio_stop(),
            "synthesize" => {
                // Streaming clients send it too, for older servers: the stream is what counts.
                if self.text_stream.is_some() {
                    return Ok(());
                }
                let Some(text) = e.str("text").map(str::to_string) else {
                    return self.send(&error_event("bad-request", "synthesize without text"));
                };
                self.synthesize(&text)
            }
            "synthesize-start" => {
                self.text_stream = Some(Chunker::sentences());
                Ok(())
            }
            "synthesize-chunk" => {
                let text = e.str("text").unwrap_or("").to_string();
                let Some(chunker) = self.text_stream.as_mut() else {
                    return self.send(&error_event(
                        "bad-request",
                        "synthesize-chunk without synthesize-start",
                    ));
                };
                for sentence in chunker.push(&text) {
                    self.synthesize(&sentence)?;
                }
                Ok(())
            }
            "synthesize-stop" => {
                let Some(mut chunker) = self.text_stream.take() else {
                    return self.send(&error_event(
                        "bad-request",
                        "synthesize-stop without synthesize-start",
                    ));
                };
                if let Some(rest) = chunker.finish() {
                    self.synthesize(&rest)?;
                }
                self.send(&Event::new("synthesize-stopped", Value::Null))
            }
            "transcript" => {
                let text = e.str("text").unwrap_or("").to_string();
                let from_context = e
                    .data
                    .get("context")
                    .and_then(|c| c.get("conversation_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.handle(text, from_context)
            }
            other => {
                let msg = format!("unknown event type {other:?}");
                self.send(&error_event("unknown-event", &msg))
            }
        }
    }

    fn audio_chunk(&mut self, e: &Event) -> std::io::Result<()> {
        if self.discarding {
            return Ok(());
        }
        let (rate, width, channels) = match audio_format(e) {
            Ok(f) => f,
            Err(msg) => return self.send(&error_event("bad-audio", &msg)),
        };
        let u = self.utterance.get_or_insert(Utterance {
            rate,
            width,
            channels,
            samples: Vec::new(),
        });
        if (u.rate, u.width, u.channels) != (rate, width, channels) {
            let msg = format!(
                "audio-chunk is {rate} Hz, {width} bytes, {channels} channel(s) but the \
                 stream started as {} Hz, {} bytes, {} channel(s)",
                u.rate, u.width, u.channels
            );
            self.utterance = None;
            self.discarding = true;
            return self.send(&error_event("bad-audio", &msg));
        }
        let Some(interleaved) = protocol::pcm_to_f32(&e.payload, width) else {
            return self.send(&error_event("bad-audio", "unsupported sample width"));
        };
        let mono = crate::audio::downmix(&interleaved, channels);
        let max = self.shared.options.max_utterance;
        if (u.samples.len() + mono.len()) as f64 > max.as_secs_f64() * rate as f64 {
            self.utterance = None;
            self.discarding = true;
            let msg = format!(
                "the utterance is longer than {} s, the most this server transcribes",
                max.as_secs()
            );
            return self.send(&error_event("too-long", &msg));
        }
        u.samples.extend_from_slice(&mono);
        Ok(())
    }

    fn audio_stop(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.discarding) {
            return Ok(());
        }
        let Some(u) = self.utterance.take() else {
            // Nothing was sent: an empty transcript, as other servers answer.
            return self.send(&Event::new("transcript", json!({"text": ""})));
        };
        let samples = match crate::audio::resample(&u.samples, u.rate, 16_000) {
            Ok(s) => s,
            Err(err) => return self.send(&error_event("bad-audio", &err.to_string())),
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job = AsrJob {
            samples,
            language: self.language.clone(),
            vocabulary: self.vocabulary.clone(),
            gone: self.gone.clone(),
            reply: tx,
        };
        if let Err(refused) = submit(&self.shared.asr, "asr", job) {
            return self.send(&refused.event());
        }
        let (segments, language) = match rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(msg)) => return self.send(&error_event("asr-failed", &msg)),
            Err(_) => return self.send(&error_event("asr-failed", "the engine stopped")),
        };
        let texts: Vec<&str> = segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect();
        let text = texts.join(" ");
        // Streaming clients read the chunks; older ones the transcript.
        self.send(&Event::new(
            "transcript-start",
            json!({ "language": language }),
        ))?;
        for (i, t) in texts.iter().enumerate() {
            let piece = if i == 0 {
                t.to_string()
            } else {
                format!(" {t}")
            };
            self.send(&Event::new("transcript-chunk", json!({ "text": piece })))?;
        }
        self.send(&Event::new(
            "transcript",
            json!({ "text": text, "language": language }),
        ))?;
        self.send(&Event::new("transcript-stop", Value::Null))
    }

    /// Speaks `text` sentence by sentence: `audio-start`, the chunks of each sentence as soon
    /// as it is synthesized, `audio-stop`. A sentence too long to wait for is cut at a word
    /// boundary, and its pieces' speech meets without a pause.
    fn synthesize(&mut self, text: &str) -> std::io::Result<()> {
        let mut chunker = Chunker::sentences();
        let mut sentences = chunker.push_chunks(text);
        sentences.extend(chunker.finish_chunk());
        let rate = self.shared.tts_rate_hz;
        let format = json!({"rate": rate, "width": 2, "channels": 1});
        let mut started = false;
        let mut seams = crate::tts::Seams::default();
        for sentence in sentences {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let job = TtsJob {
                text: sentence.text,
                gone: self.gone.clone(),
                reply: tx,
            };
            if let Err(refused) = submit(&self.shared.tts, "tts", job) {
                return self.send(&refused.event());
            }
            let mut speech = match rx.recv() {
                Ok(Ok(s)) => s,
                Ok(Err(msg)) => return self.send(&error_event("tts-failed", &msg)),
                Err(_) => return self.send(&error_event("tts-failed", "the engine stopped")),
            };
            seams.close(
                &mut speech.samples,
                speech.sample_rate_hz,
                sentence.mid_clause,
            );
            if !started {
                self.send(&Event::new("audio-start", format.clone()))?;
                started = true;
            }
            for piece in speech.samples.chunks(SAMPLES_PER_CHUNK) {
                self.send(
                    &Event::new("audio-chunk", format.clone()).with_payload(protocol::pcm16(piece)),
                )?;
            }
        }
        if !started {
            self.send(&Event::new("audio-start", format.clone()))?;
        }
        self.send(&Event::new("audio-stop", Value::Null))
    }

    fn handle(&mut self, text: String, from_context: Option<String>) -> std::io::Result<()> {
        let conversation = from_context
            .or_else(|| self.conversation.clone())
            .unwrap_or_else(|| {
                let n = self.shared.next_conversation.fetch_add(1, Ordering::SeqCst);
                format!("sotto-{n}")
            });
        self.conversation = Some(conversation.clone());
        let context = json!({ "conversation_id": conversation });
        let (tx, rx) = crossbeam_channel::unbounded();
        let job = HandleJob {
            text,
            conversation,
            gone: self.gone.clone(),
            reply: tx,
        };
        if let Err(refused) = submit(&self.shared.handle, "handle", job) {
            return self.send(&refused.event());
        }
        let mut streaming = false;
        for out in rx.iter() {
            match out {
                HandleOut::Chunk(piece) => {
                    if !streaming {
                        self.send(&Event::new("handled-start", json!({ "context": context })))?;
                        streaming = true;
                    }
                    self.send(&Event::new("handled-chunk", json!({ "text": piece })))?;
                }
                HandleOut::Done { handled, text } => {
                    let kind = if handled { "handled" } else { "not-handled" };
                    if handled && !streaming {
                        // A command's reply: one chunk, so streaming clients see it too.
                        self.send(&Event::new("handled-start", json!({ "context": context })))?;
                        self.send(&Event::new("handled-chunk", json!({ "text": text })))?;
                        streaming = true;
                    }
                    self.send(&Event::new(
                        kind,
                        json!({ "text": text, "context": context }),
                    ))?;
                    if streaming {
                        self.send(&Event::new("handled-stop", Value::Null))?;
                    }
                    return Ok(());
                }
                HandleOut::Failed(msg) => {
                    return self.send(&error_event("handle-failed", &msg));
                }
            }
        }
        self.send(&error_event("handle-failed", "the engine stopped"))
    }
}

/// The (rate, width, channels) of an `audio-start` or `audio-chunk`, checked.
fn audio_format(e: &Event) -> Result<(u32, usize, usize), String> {
    let get = |k: &str| e.data.get(k).and_then(Value::as_u64);
    let (Some(rate), Some(width), Some(channels)) = (get("rate"), get("width"), get("channels"))
    else {
        return Err(format!("{} needs rate, width and channels", e.kind));
    };
    // Up to 96 kHz: an utterance is held as mono floats until audio-stop, so the rate bounds
    // what one client can make the server hold (60 s at 96 kHz: 23 MB).
    if !(4_000..=96_000).contains(&rate) {
        return Err(format!(
            "{} has rate {rate} Hz; 4000–96000 Hz is taken",
            e.kind
        ));
    }
    if !(1..=4).contains(&width) {
        return Err(format!("{} has width {width}; 1–4 bytes is taken", e.kind));
    }
    if !(1..=16).contains(&channels) {
        return Err(format!("{} has {channels} channels; 1–16 is taken", e.kind));
    }
    Ok((rate as u32, width as usize, channels as usize))
}
