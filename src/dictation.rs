//! Dictation: speech from a microphone (or a WAV file fed at real-time pace) becomes text.
//!
//! Threads, each owning its resource, joined by bounded channels:
//!
//! ```text
//! source ("capture": cpal stream | "file-feed": WAV) ──SPSC ring──▶ "frontend"
//!   (resample to 16 kHz, VAD, segmenter) ──utterances──▶ "stt" (whisper) ──transcripts──▶ caller
//! ```
//!
//! Shutdown: `stop` (Ctrl-C) ends the source; the front end drains the ring, ends the
//! utterance in progress, and closes its channel; the STT thread transcribes what it has and
//! closes its own. Nothing said before Ctrl-C is lost. Every thread is joined and the first
//! error is returned.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use ringbuf::traits::{Consumer, Observer};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use serde::Serialize;

use crate::capture::{self, CaptureBlock, CaptureStats, RingConsumer};
use crate::ptt;
use crate::stt::{Stt, SttOptions};
use crate::vad::{self, Detector, DetectorKind, Segmenter, SegmenterConfig, Utterance};

#[derive(Clone, Debug)]
pub struct DictationOptions {
    /// Input device by name (None = default). Ignored with `input`.
    pub device: Option<String>,
    /// Feed this WAV instead of a microphone.
    pub input: Option<PathBuf>,
    /// With `input`: as fast as possible rather than at real-time pace.
    pub fast: bool,
    pub detector: DetectorKind,
    pub aggressiveness: u8,
    pub segmenter: SegmenterConfig,
    pub stt: SttOptions,
    /// Push-to-talk: utterances are what is recorded between start and stop (ctl socket,
    /// SIGUSR1, the hotkey) instead of what the VAD finds.
    pub ptt: Option<ptt::Mode>,
    /// With `ptt`: a global hotkey (see [`crate::hotkey`]), e.g. `F9` or `ctrl+alt+space`.
    pub ptt_key: Option<String>,
}

/// One recognised utterance.
#[derive(Clone, Debug, Serialize)]
pub struct Transcript {
    pub text: String,
    /// Seconds from the start of the stream.
    pub start: f64,
    pub end: f64,
    /// From the end of the utterance being detected to the text being ready.
    pub latency_ms: u64,
    /// Cut at the maximum utterance length; the next transcript continues it.
    pub split: bool,
}

/// Counters reported at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DictationStats {
    pub utterances: usize,
    pub dropped_samples: u64,
    pub captured_samples: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DictationError {
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error(transparent)]
    Stt(#[from] crate::stt::SttError),
    #[error("resampler: {0}")]
    Resample(String),
    #[error("push-to-talk control {0}")]
    Control(String, #[source] std::io::Error),
    #[error(transparent)]
    ControlSocket(#[from] ptt::ControlError),
    #[error(transparent)]
    Hotkey(#[from] crate::hotkey::HotkeyError),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// An utterance as the front end hands it on.
pub struct Timed {
    pub utterance: Utterance,
    /// When the VAD declared it finished (the end of the hangover).
    pub detected: Instant,
    /// Sequence number from 1; a push-to-talk cancel voids every utterance up to it.
    pub id: u64,
}

/// What the agent hooks into the front end.
#[derive(Clone, Default)]
pub struct FrontendHooks {
    /// While set, the microphone is heard as silence: the echo guard, so sotto does not hear
    /// itself through the speakers.
    pub mute: Option<Arc<AtomicBool>>,
    /// Told when the VAD hears speech begin (never blocks: a full channel drops the notice).
    pub speech_started: Option<Sender<Instant>>,
}

/// The listening half of the pipeline: source, ring and front end, running on their threads.
/// Utterances come out of [`Listener::utterances`]; [`Listener::finish`] joins the threads.
pub struct Listener {
    pub utterances: Receiver<Timed>,
    /// Push-to-talk cancel: utterances with an id up to this are void.
    pub cancelled_through: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stats: Arc<CaptureStats>,
    frontend: JoinHandle<Result<(), DictationError>>,
    source: JoinHandle<Result<(), DictationError>>,
    ptt: Option<JoinHandle<Result<(), DictationError>>>,
}

impl Listener {
    /// Opens the input (device or file) and starts the source, front-end and (with `ptt`)
    /// push-to-talk threads. They run until the input ends or `stop` is set.
    pub fn start(
        opts: &DictationOptions,
        stop: Arc<AtomicBool>,
        hooks: FrontendHooks,
    ) -> Result<Self, DictationError> {
        let rate_hz = match &opts.input {
            Some(path) => crate::audio::read_wav(path)?.sample_rate_hz,
            None => capture::device_rate(opts.device.as_deref())?,
        };
        let (producer, consumer) = capture::ring(rate_hz, capture::RING_SECONDS);
        let stats = Arc::new(CaptureStats::default());
        let source_done = Arc::new(AtomicBool::new(false));
        // New ring halves after a device reconnect.
        let (reconnect_tx, reconnect_rx) = bounded::<RingConsumer<f32>>(1);

        let source: JoinHandle<Result<(), DictationError>> = {
            let stats = stats.clone();
            let stop = stop.clone();
            let done = source_done.clone();
            let opts = opts.clone();
            let name = if opts.input.is_some() {
                "file-feed"
            } else {
                "capture"
            };
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let r = match &opts.input {
                        Some(path) => {
                            let block = CaptureBlock::new(producer, 1, stats);
                            capture::feed_file(path, block, opts.fast, &stop).map_err(Into::into)
                        }
                        None => capture::run_capture_thread(
                            opts.device.clone(),
                            rate_hz,
                            producer,
                            stats,
                            stop,
                            reconnect_tx,
                        )
                        .map_err(Into::into),
                    };
                    done.store(true, Ordering::Release);
                    r
                })
                .expect("spawning a thread only fails when the OS is out of resources")
        };

        // Push-to-talk: the control socket and SIGUSR1 feed the state machine on its thread.
        let cancelled_through = Arc::new(AtomicU64::new(0));
        let (ptt_commands, ptt_thread) = match opts.ptt {
            None => (None, None),
            Some(mode) => {
                let hotkey = match &opts.ptt_key {
                    Some(spec) => Some(crate::hotkey::Hotkey::open(spec)?),
                    None => None,
                };
                let (tx, rx) = bounded::<ptt::Action>(16);
                let h = spawn_ptt(mode, hotkey, stop.clone(), tx, cancelled_through.clone())?;
                (Some(rx), Some(h))
            }
        };

        // Utterances: block when full. Speech must not be lost; a slow STT backs up into
        // the 20 s ring, whose overflow the capture side counts.
        let (utt_tx, utt_rx) = bounded::<Timed>(4);
        let frontend: JoinHandle<Result<(), DictationError>> = {
            let opts = opts.clone();
            let done = source_done.clone();
            std::thread::Builder::new()
                .name("frontend".into())
                .spawn(move || {
                    frontend(
                        consumer,
                        reconnect_rx,
                        rate_hz,
                        &opts,
                        ptt_commands,
                        hooks,
                        &done,
                        utt_tx,
                    )
                })
                .expect("spawning a thread only fails when the OS is out of resources")
        };
        Ok(Self {
            utterances: utt_rx,
            cancelled_through,
            stop,
            stats,
            frontend,
            source,
            ptt: ptt_thread,
        })
    }

    /// Waits for the front end to finish (the input ended or `stop` was set and the ring is
    /// drained), then stops and joins the other threads. Returns (dropped, captured) samples.
    pub fn finish(self) -> Result<(u64, u64), DictationError> {
        drop(self.utterances);
        let join = |name: &'static str, h: JoinHandle<Result<(), DictationError>>| {
            h.join().map_err(|_| DictationError::Panicked(name))?
        };
        let frontend = join("frontend", self.frontend);
        // The source may still be waiting on a device; it sees `stop` or has finished.
        self.stop.store(true, Ordering::Relaxed);
        join("source", self.source)?;
        if let Some(h) = self.ptt {
            join("ptt", h)?;
        }
        frontend?;
        Ok((
            self.stats.overruns.load(Ordering::Relaxed),
            self.stats.samples.load(Ordering::Relaxed),
        ))
    }
}

/// Runs dictation until the input ends or `stop` is set, calling `on_transcript` on the
/// calling thread for each utterance as soon as it is recognised.
pub fn run(
    opts: DictationOptions,
    stt: Stt,
    stop: Arc<AtomicBool>,
    mut on_transcript: impl FnMut(&Transcript),
) -> Result<DictationStats, DictationError> {
    let listener = Listener::start(&opts, stop, FrontendHooks::default())?;

    // Transcripts: block when full; the caller prints them as they come.
    let (text_tx, text_rx) = bounded::<Transcript>(16);
    let stt_thread: JoinHandle<Result<usize, DictationError>> = {
        let stt_opts = opts.stt.clone();
        let cancelled = listener.cancelled_through.clone();
        let utterances = listener.utterances.clone();
        std::thread::Builder::new()
            .name("stt".into())
            .spawn(move || stt_loop(stt, &stt_opts, utterances, &cancelled, text_tx))
            .expect("spawning a thread only fails when the OS is out of resources")
    };

    for t in text_rx.iter() {
        on_transcript(&t);
    }
    let utterances = stt_thread
        .join()
        .map_err(|_| DictationError::Panicked("stt"))??;
    let (dropped_samples, captured_samples) = listener.finish()?;
    Ok(DictationStats {
        utterances,
        dropped_samples,
        captured_samples,
    })
}

const RESAMPLER_CHUNK: usize = 1024;
/// How often the push-to-talk thread looks at the hotkey, the socket and SIGUSR1.
const PTT_POLL: Duration = Duration::from_millis(10);

/// Where 16 kHz audio goes: the VAD and segmenter, or the push-to-talk gate.
enum Gate {
    Vad {
        detector: Detector,
        segmenter: Segmenter,
        frame: Vec<f32>,
        speech_started: Option<Sender<Instant>>,
    },
    Ptt {
        commands: Receiver<ptt::Action>,
        recording: bool,
        buf: Vec<f32>,
        start: usize,
        pos: usize,
    },
}

impl Gate {
    /// Feeds 16 kHz samples; returns finished utterances through `emit` (false = stop).
    fn feed(&mut self, samples: &[f32], emit: &mut dyn FnMut(Utterance) -> bool) -> bool {
        match self {
            Gate::Vad {
                detector,
                segmenter,
                frame,
                speech_started,
            } => {
                for &s in samples {
                    frame.push(s);
                    if frame.len() == vad::FRAME_SAMPLES {
                        let speech = detector.is_speech(frame);
                        let was_in_speech = segmenter.in_speech();
                        let finished = segmenter.push(frame, speech);
                        if !was_in_speech
                            && segmenter.in_speech()
                            && let Some(tx) = speech_started
                        {
                            let _ = tx.try_send(Instant::now());
                        }
                        if let Some(u) = finished
                            && !emit(u)
                        {
                            return false;
                        }
                        frame.clear();
                    }
                }
                true
            }
            Gate::Ptt {
                commands,
                recording,
                buf,
                start,
                pos,
            } => {
                while let Ok(action) = commands.try_recv() {
                    match action {
                        ptt::Action::StartRecording => {
                            *recording = true;
                            *start = *pos;
                            buf.clear();
                        }
                        ptt::Action::StopAndTranscribe => {
                            *recording = false;
                            if !buf.is_empty() && !emit(ptt_utterance(buf, *start)) {
                                return false;
                            }
                        }
                        ptt::Action::Discard => {
                            *recording = false;
                            buf.clear();
                        }
                        ptt::Action::None => {}
                    }
                }
                if *recording {
                    buf.extend_from_slice(samples);
                }
                *pos += samples.len();
                true
            }
        }
    }

    fn flush(&mut self) -> Option<Utterance> {
        match self {
            Gate::Vad { segmenter, .. } => segmenter.flush(),
            Gate::Ptt {
                buf,
                start,
                recording,
                ..
            } => (*recording && !buf.is_empty()).then(|| ptt_utterance(buf, *start)),
        }
    }
}

fn ptt_utterance(buf: &mut Vec<f32>, start: usize) -> Utterance {
    let at = |n: usize| Duration::from_secs_f64(n as f64 / vad::SAMPLE_RATE_HZ as f64);
    let samples = std::mem::take(buf);
    Utterance {
        start: at(start),
        end: at(start + samples.len()),
        samples,
        split: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn frontend(
    mut consumer: RingConsumer<f32>,
    reconnect: Receiver<RingConsumer<f32>>,
    rate_hz: u32,
    opts: &DictationOptions,
    ptt_commands: Option<Receiver<ptt::Action>>,
    hooks: FrontendHooks,
    source_done: &AtomicBool,
    out: Sender<Timed>,
) -> Result<(), DictationError> {
    let muted = || {
        hooks
            .mute
            .as_ref()
            .is_some_and(|m| m.load(Ordering::Relaxed))
    };
    let mut gate = match ptt_commands {
        None => Gate::Vad {
            detector: Detector::new(opts.detector, opts.aggressiveness),
            segmenter: Segmenter::new(opts.segmenter.clone()),
            frame: Vec::with_capacity(vad::FRAME_SAMPLES),
            speech_started: hooks.speech_started.clone(),
        },
        Some(commands) => Gate::Ptt {
            commands,
            recording: false,
            buf: Vec::new(),
            start: 0,
            pos: 0,
        },
    };
    let mut resampler = if rate_hz == vad::SAMPLE_RATE_HZ {
        None
    } else {
        Some(
            Fft::<f32>::new(
                rate_hz as usize,
                vad::SAMPLE_RATE_HZ as usize,
                RESAMPLER_CHUNK,
                1,
                FixedSync::Input,
            )
            .map_err(|e| DictationError::Resample(e.to_string()))?,
        )
    };
    let out_max = resampler
        .as_ref()
        .map(|r| r.output_frames_max())
        .unwrap_or(0);
    let mut raw = vec![0.0f32; RESAMPLER_CHUNK];
    let mut raw_len = 0;
    let mut resampled = vec![0.0f32; out_max.max(1)];
    // The resampler's start-up delay is silence; skip it so timestamps line up.
    let mut skip = resampler.as_ref().map(|r| r.output_delay()).unwrap_or(0);
    let mut next_id = 0;
    let mut emit = |u: Utterance| -> bool {
        next_id += 1;
        out.send(Timed {
            utterance: u,
            detected: Instant::now(),
            id: next_id,
        })
        .is_ok()
    };
    loop {
        if let Ok(c) = reconnect.try_recv() {
            consumer = c;
        }
        let finished = source_done.load(Ordering::Acquire) && consumer.is_empty();
        let n = consumer.pop_slice(&mut raw[raw_len..]);
        raw_len += n;
        let flush_partial = finished && raw_len > 0;
        if raw_len == RESAMPLER_CHUNK || flush_partial {
            match resampler.as_mut() {
                None => {
                    if muted() {
                        raw[..raw_len].fill(0.0);
                    }
                    if !gate.feed(&raw[..raw_len], &mut emit) {
                        return Ok(());
                    }
                }
                Some(rs) => {
                    let input = InterleavedSlice::new(&raw[..], 1, RESAMPLER_CHUNK)
                        .map_err(|e| DictationError::Resample(e.to_string()))?;
                    let mut output = InterleavedSlice::new_mut(&mut resampled[..], 1, out_max)
                        .map_err(|e| DictationError::Resample(e.to_string()))?;
                    let indexing = rubato::Indexing {
                        input_offset: 0,
                        output_offset: 0,
                        partial_len: flush_partial.then_some(raw_len),
                        active_channels_mask: None,
                    };
                    let (_, produced) = rs
                        .process_into_buffer(&input, &mut output, Some(&indexing))
                        .map_err(|e| DictationError::Resample(e.to_string()))?;
                    let drop = skip.min(produced);
                    skip -= drop;
                    if muted() {
                        resampled[..produced].fill(0.0);
                    }
                    if !gate.feed(&resampled[drop..produced], &mut emit) {
                        return Ok(());
                    }
                }
            }
            raw_len = 0;
        } else if n == 0 {
            // Push-to-talk commands must be seen even when no audio arrives.
            if !gate.feed(&[], &mut emit) {
                return Ok(());
            }
        }
        if finished && raw_len == 0 {
            break;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(u) = gate.flush() {
        emit(u);
    }
    Ok(())
}

fn stt_loop(
    mut stt: Stt,
    opts: &SttOptions,
    input: Receiver<Timed>,
    cancelled_through: &AtomicU64,
    out: Sender<Transcript>,
) -> Result<usize, DictationError> {
    let mut count = 0;
    for t in input.iter() {
        if t.id <= cancelled_through.load(Ordering::Acquire) {
            continue;
        }
        let segments = stt.transcribe(&t.utterance.samples, opts, None)?;
        if t.id <= cancelled_through.load(Ordering::Acquire) {
            continue;
        }
        let text = crate::stt::strip_non_speech(&crate::transcript::plain_text(&segments));
        count += 1;
        if text.trim().is_empty() {
            continue;
        }
        let tr = Transcript {
            text,
            start: t.utterance.start.as_secs_f64(),
            end: t.utterance.end.as_secs_f64(),
            latency_ms: t.detected.elapsed().as_millis() as u64,
            split: t.utterance.split,
        };
        tracing::info!(
            stage = "stt",
            start = tr.start,
            end = tr.end,
            ms = tr.latency_ms,
            "utterance transcribed"
        );
        if out.send(tr).is_err() {
            break;
        }
    }
    Ok(count)
}

/// The push-to-talk thread: accepts control connections (non-blocking, so it notices `stop`),
/// polls SIGUSR1, runs the state machine and sends its actions to the front end.
fn spawn_ptt(
    mode: ptt::Mode,
    hotkey: Option<crate::hotkey::Hotkey>,
    stop: Arc<AtomicBool>,
    actions: Sender<ptt::Action>,
    cancelled_through: Arc<AtomicU64>,
) -> Result<JoinHandle<Result<(), DictationError>>, DictationError> {
    let (path, listener) = ptt::bind()?;
    listener
        .set_nonblocking(true)
        .map_err(|e| DictationError::Control(path.display().to_string(), e))?;
    let usr1 = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone())
        .map_err(|e| DictationError::Control("SIGUSR1".into(), e))?;
    tracing::info!(stage = "ptt", socket = %path.display(), ?mode, hotkey = hotkey.is_some(), "push-to-talk ready");
    Ok(std::thread::Builder::new()
        .name("ptt".into())
        .spawn(move || {
            let (events_tx, events_rx) = bounded::<ptt::Event>(64);
            let mut machine = ptt::Machine::default();
            let mut emitted_stops = 0u64;
            let mut key_down = false;
            while !stop.load(Ordering::Relaxed) {
                if let Some(h) = &hotkey {
                    let down = h.is_down();
                    if down != key_down {
                        key_down = down;
                        let _ = events_tx.send(if down {
                            ptt::Event::Press
                        } else {
                            ptt::Event::Release
                        });
                    }
                }
                match listener.accept() {
                    Ok((conn, _)) => {
                        let tx = events_tx.clone();
                        let _ = conn.set_nonblocking(false);
                        let _ = std::thread::Builder::new()
                            .name("ptt-conn".into())
                            .spawn(move || ptt::serve(conn, &tx));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => tracing::warn!(stage = "ptt", error = %e, "control socket"),
                }
                if usr1.swap(false, Ordering::Relaxed) {
                    let _ = events_tx.send(ptt::Event::Toggle);
                }
                while let Ok(event) = events_rx.try_recv() {
                    let before = machine.state;
                    let (next, action) = ptt::step(machine, event, mode, Instant::now());
                    machine = next;
                    match action {
                        ptt::Action::StopAndTranscribe => emitted_stops += 1,
                        // Cancelling while transcribing voids the utterance in flight.
                        ptt::Action::Discard if before == ptt::State::Processing => {
                            cancelled_through.fetch_max(emitted_stops, Ordering::AcqRel);
                        }
                        _ => {}
                    }
                    if action != ptt::Action::None && actions.send(action).is_err() {
                        return Ok(());
                    }
                }
                std::thread::sleep(PTT_POLL);
            }
            let _ = std::fs::remove_file(&path);
            Ok(())
        })
        .expect("spawning a thread only fails when the OS is out of resources"))
}
