//! Listening: the source → SPSC ring → 16 kHz → voice activity detection (or the push-to-talk
//! gate) → utterances.
//!
//! Threads, each owning its resource:
//!
//! ```text
//! source ("capture": cpal stream | "file-feed": a clip) ──SPSC ring──▶ "frontend"
//!   (resample to 16 kHz, detector + segmenter, or the push-to-talk gate) ──utterances──▶
//! "ptt" (control socket, SIGUSR1, hotkey → the push-to-talk state machine) ──▶ frontend
//! ```
//!
//! A WAV input is checked whole when opened and read as it is fed (stdin is decoded whole
//! first). Each utterance says when
//! its last voiced frame was heard ([`Heard::last_voiced_at`]): latencies are measured from the
//! moment the speaker stopped, not from when the detector's hangover ran out.
//!
//! Shutdown: `stop` (Ctrl-C) ends the source; the front end drains the ring, ends the
//! utterance in progress and closes its channel. Nothing said before Ctrl-C is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use ringbuf::traits::{Consumer, Observer};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::{TurnId, spawn};
use crate::audio::{Clip, WavFile};
use crate::capture::{self, CaptureBlock, CaptureStats, RingConsumer, RingProducer};
use crate::ptt;
use crate::vad::{self, Detector, DetectorKind, Segmenter, SegmenterConfig, Utterance};

/// Where the audio comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// An input device by name (None: the default).
    Device(Option<String>),
    /// A decoded WAV, fed at real-time pace (or as fast as it is taken, with `fast`).
    Clip { clip: Arc<Clip>, fast: bool },
    /// A WAV file read as it is fed (checked when opened), paced like `Clip`.
    File { wav: Arc<WavFile>, fast: bool },
}

impl Source {
    /// `--input PATH`: a regular file is read as it is played; stdin (`-`) is read whole.
    pub fn input(path: &std::path::Path, fast: bool) -> Result<Self, crate::audio::AudioError> {
        if path == std::path::Path::new("-") {
            return Ok(Source::Clip {
                clip: Arc::new(crate::audio::read_wav(path)?),
                fast,
            });
        }
        Ok(Source::File {
            wav: Arc::new(WavFile::open(path)?),
            fast,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ListenOptions {
    pub source: Source,
    pub detector: DetectorKind,
    pub aggressiveness: u8,
    pub segmenter: SegmenterConfig,
    /// Push-to-talk: utterances are what is recorded between start and stop (ctl socket,
    /// SIGUSR1, the hotkey) instead of what the detector finds.
    pub ptt: Option<ptt::Mode>,
    /// With `ptt`: a global hotkey (see [`crate::hotkey`]), e.g. `F9` or `ctrl+alt+space`.
    pub ptt_key: Option<String>,
    /// Send the utterance so far to the transcriber when a pause begins ([`Snapshot`]).
    pub speculate: bool,
    /// Send the utterance so far every this much speech (live partial transcripts).
    pub partials_every: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    #[error("resampling from {rate_hz} Hz")]
    Resample {
        rate_hz: u32,
        #[source]
        source: StageErrorBox,
    },
    #[error("push-to-talk control {0}")]
    Control(String, #[source] std::io::Error),
    #[error(transparent)]
    ControlSocket(#[from] ptt::ControlError),
    #[error(transparent)]
    Hotkey(#[from] crate::hotkey::HotkeyError),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The input file could not be read as it was played (changed since it was checked).
    #[error(transparent)]
    Input(#[from] crate::audio::AudioError),
}

type StageErrorBox = Box<dyn std::error::Error + Send + Sync>;

/// An utterance as the listener hands it on.
#[derive(Debug)]
pub struct Heard {
    pub utterance: Utterance,
    /// Numbered from 1; a push-to-talk cancel voids every utterance up to a number.
    pub turn: TurnId,
    /// When the end of the utterance was decided (the detector's hangover ran out, or
    /// push-to-talk stopped).
    pub ended_at: Instant,
    /// When its last voiced frame was heard: the speaker's last word.
    pub last_voiced_at: Instant,
}

/// What the listener tells the coordinator as it happens (never blocking: a full channel
/// drops the notice).
#[derive(Clone, Copy, Debug)]
pub enum ListenEvent {
    /// The detector heard speech begin.
    SpeechStarted { at: Instant },
    /// Silence inside the utterance that will be `turn` became a pause.
    Paused {
        turn: TurnId,
        last_voiced_at: Instant,
    },
    /// Speech came back after a pause: work done on the pause is void.
    Resumed { turn: TurnId, at: Instant },
}

/// The utterance in progress so far, sent to the transcriber while it is still going on.
#[derive(Debug)]
pub struct Snapshot {
    /// The number the utterance will have.
    pub turn: TurnId,
    pub samples: Vec<f32>,
    /// Stream offset of its start.
    pub start: Duration,
    /// Stream offset of its last voiced frame: a final utterance that ends at the same frame
    /// holds the same audio.
    pub last_voiced: Duration,
    pub last_voiced_at: Instant,
    pub kind: SnapshotKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// At a pause: the turn may be over; speculative work starts from it.
    Pause,
    /// While speech goes on: a live partial transcript.
    Partial,
}

/// What the agent hooks into the front end.
#[derive(Clone, Default)]
pub struct Hooks {
    /// While set, the input is heard as silence: the echo guard, so sotto does not hear
    /// itself through the speakers.
    pub mute: Option<Arc<AtomicBool>>,
    /// Where speech onsets, pauses and resumptions are reported.
    pub events: Option<Sender<ListenEvent>>,
}

/// The listening half of the pipeline, running on its threads. Utterances come out of
/// [`Listener::utterances`]; [`Listener::finish`] joins the threads.
pub struct Listener {
    pub utterances: Receiver<Heard>,
    /// Utterances in progress (with `speculate` or `partials_every`); older ones are dropped
    /// when the transcriber is behind.
    pub snapshots: Receiver<Snapshot>,
    /// Ends the utterance that will be this turn at once, if it is still in the pause the
    /// decision was made on (the coordinator decided the pause is the end of the turn).
    pub end_now: Sender<EndNow>,
    /// Push-to-talk cancel: utterances with a number up to this are void.
    pub cancelled_through: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stats: Arc<CaptureStats>,
    frontend: JoinHandle<Result<FrontendStats, ListenError>>,
    source: JoinHandle<Result<(), ListenError>>,
    ptt: Option<JoinHandle<Result<(), ListenError>>>,
}

/// Counters reported at the end.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ListenStats {
    pub dropped_samples: u64,
    pub captured_samples: u64,
    /// Stretches of speech heard while the input was muted (the echo guard, while sotto
    /// speaks) and so never transcribed. Through speakers most are sotto's own voice; with
    /// headphones they are the user's.
    pub muted_speech: u64,
    /// Times the voice detector started afresh after a second of digital silence.
    pub detector_resets: u64,
}

/// What the front end counted.
#[derive(Clone, Copy, Debug, Default)]
struct FrontendStats {
    muted_speech: u64,
    detector_resets: u64,
}

/// Listens to the audio the echo guard mutes, only to count the speech in it: its own
/// detector and segmenter, so the real ones never see it.
struct MutedEar {
    detector: Detector,
    segmenter: Segmenter,
    frame: Vec<f32>,
    heard: u64,
}

impl MutedEar {
    fn new(opts: &ListenOptions) -> Self {
        Self {
            detector: Detector::new(opts.detector, opts.aggressiveness),
            segmenter: Segmenter::new(opts.segmenter.clone()),
            frame: Vec::with_capacity(vad::FRAME_SAMPLES),
            heard: 0,
        }
    }

    fn hear(&mut self, samples: &[f32]) {
        for &s in samples {
            self.frame.push(s);
            if self.frame.len() == vad::FRAME_SAMPLES {
                let speech = self.detector.is_speech(&self.frame);
                if self.segmenter.push(&self.frame, speech).is_some() {
                    self.heard += 1;
                }
                self.frame.clear();
            }
        }
    }

    /// The input opened again: speech still in progress counts now.
    fn unmuted(&mut self) {
        if self.segmenter.flush().is_some() {
            self.heard += 1;
        }
        self.frame.clear();
    }
}

impl Listener {
    /// Opens the source and starts the source, front-end and (with `ptt`) push-to-talk
    /// threads. They run until the input ends or `stop` is set.
    pub fn start(
        opts: &ListenOptions,
        stop: Arc<AtomicBool>,
        hooks: Hooks,
    ) -> Result<Self, ListenError> {
        let rate_hz = match &opts.source {
            Source::Clip { clip, .. } => clip.sample_rate_hz,
            Source::File { wav, .. } => wav.sample_rate_hz,
            Source::Device(name) => capture::device_rate(name.as_deref())?,
        };
        let (producer, consumer) = capture::ring(rate_hz, capture::RING_SECONDS);
        let stats = Arc::new(CaptureStats::default());
        let source_done = Arc::new(AtomicBool::new(false));
        // New ring halves after a device reconnect.
        let (reconnect_tx, reconnect_rx) = bounded::<RingConsumer<f32>>(1);

        let source = {
            let stats = stats.clone();
            let stop = stop.clone();
            let done = source_done.clone();
            let src = opts.source.clone();
            let name = match &src {
                Source::Clip { .. } | Source::File { .. } => "file-feed",
                Source::Device(_) => "capture",
            };
            spawn(name, move || {
                let r = match src {
                    Source::Clip { clip, fast } => {
                        let block = CaptureBlock::new(producer, 1, stats);
                        capture::feed_clip(&clip, block, fast, &stop);
                        Ok(())
                    }
                    Source::File { wav, fast } => {
                        let block = CaptureBlock::new(producer, 1, stats);
                        capture::feed_wav(&wav, block, fast, &stop).map_err(ListenError::from)
                    }
                    Source::Device(name) => {
                        run_capture_thread(name, rate_hz, producer, stats, stop, reconnect_tx)
                            .map_err(Into::into)
                    }
                };
                done.store(true, Ordering::Release);
                r
            })
        };

        // Push-to-talk: the control socket, SIGUSR1 and the hotkey feed the state machine.
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

        // Utterances: block when full. Speech must not be lost; a slow transcriber backs up
        // into the 20 s ring, whose overflow the capture side counts.
        let (utt_tx, utt_rx) = bounded::<Heard>(4);
        // Snapshots: drop the newest when full (the transcriber is busy; a later one comes).
        let (snap_tx, snap_rx) = bounded::<Snapshot>(2);
        // End-now requests: drop when full (one is enough).
        let (end_tx, end_rx) = bounded::<EndNow>(4);
        let frontend = {
            let opts = opts.clone();
            let done = source_done.clone();
            spawn("frontend", move || {
                frontend(
                    consumer,
                    reconnect_rx,
                    rate_hz,
                    &opts,
                    ptt_commands,
                    hooks,
                    &done,
                    Outputs {
                        utterances: utt_tx,
                        snapshots: snap_tx,
                        end_now: end_rx,
                    },
                )
            })
        };
        Ok(Self {
            utterances: utt_rx,
            snapshots: snap_rx,
            end_now: end_tx,
            cancelled_through,
            stop,
            stats,
            frontend,
            source,
            ptt: ptt_thread,
        })
    }

    /// Waits for the front end to finish (the input ended or `stop` was set and the ring is
    /// drained), then stops and joins the other threads.
    pub fn finish(self) -> Result<ListenStats, ListenError> {
        drop(self.utterances);
        fn join<T>(
            name: &'static str,
            h: JoinHandle<Result<T, ListenError>>,
        ) -> Result<T, ListenError> {
            h.join().map_err(|_| ListenError::Panicked(name))?
        }
        let frontend = join("frontend", self.frontend);
        // The source may still be waiting on a device; it sees `stop` or has finished.
        self.stop.store(true, Ordering::Relaxed);
        join("source", self.source)?;
        if let Some(h) = self.ptt {
            join("ptt", h)?;
        }
        let counted = frontend?;
        Ok(ListenStats {
            dropped_samples: self.stats.overruns.load(Ordering::Relaxed),
            captured_samples: self.stats.samples.load(Ordering::Relaxed),
            muted_speech: counted.muted_speech,
            detector_resets: counted.detector_resets,
        })
    }
}

const RESAMPLER_CHUNK: usize = 1024;
/// How often the push-to-talk thread looks at the hotkey, the socket and SIGUSR1.
const PTT_POLL: Duration = Duration::from_millis(10);

/// Where 16 kHz audio goes: the detector and segmenter, or the push-to-talk gate.
// One per listener, made once and never moved on the audio path: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Gate {
    Vad {
        detector: Detector,
        segmenter: Segmenter,
        frame: Vec<f32>,
        /// Pauses and resumptions since the front end last looked.
        changes: Vec<vad::PauseChange>,
        events: Option<Sender<ListenEvent>>,
    },
    Ptt {
        commands: Receiver<ptt::Action>,
        recording: bool,
        buf: Vec<f32>,
        start: usize,
    },
}

impl Gate {
    fn stats(&self, ear: &MutedEar) -> FrontendStats {
        FrontendStats {
            muted_speech: ear.heard,
            detector_resets: match self {
                Gate::Vad { detector, .. } => detector.resets(),
                Gate::Ptt { .. } => 0,
            },
        }
    }

    /// Feeds 16 kHz samples (`pos`: samples fed before them); finished utterances are pushed
    /// onto `done`.
    fn feed(&mut self, samples: &[f32], pos: usize, done: &mut Vec<Utterance>) {
        match self {
            Gate::Vad {
                detector,
                segmenter,
                frame,
                changes,
                events,
            } => {
                for &s in samples {
                    frame.push(s);
                    if frame.len() == vad::FRAME_SAMPLES {
                        let speech = detector.is_speech(frame);
                        let was_in_speech = segmenter.in_speech();
                        let finished = segmenter.push(frame, speech);
                        if !was_in_speech
                            && segmenter.in_speech()
                            && let Some(tx) = events
                        {
                            let _ = tx.try_send(ListenEvent::SpeechStarted { at: Instant::now() });
                        }
                        changes.extend(segmenter.take_pause_change());
                        done.extend(finished);
                        frame.clear();
                    }
                }
            }
            Gate::Ptt {
                commands,
                recording,
                buf,
                start,
            } => {
                while let Ok(action) = commands.try_recv() {
                    match action {
                        ptt::Action::StartRecording => {
                            *recording = true;
                            *start = pos;
                            buf.clear();
                        }
                        ptt::Action::StopAndTranscribe => {
                            *recording = false;
                            if !buf.is_empty() {
                                done.push(ptt_utterance(buf, *start));
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
            }
        }
    }

    fn end_now(&mut self, last_voiced: Duration) -> Option<Utterance> {
        match self {
            Gate::Vad { segmenter, .. } => segmenter.end_now(last_voiced),
            Gate::Ptt { .. } => None,
        }
    }

    fn so_far(&self) -> Option<vad::SoFar> {
        match self {
            Gate::Vad { segmenter, .. } => segmenter.so_far(),
            Gate::Ptt { .. } => None,
        }
    }

    fn in_speech(&self) -> bool {
        match self {
            Gate::Vad { segmenter, .. } => segmenter.in_speech(),
            Gate::Ptt { recording, .. } => *recording,
        }
    }

    fn take_changes(&mut self) -> Vec<vad::PauseChange> {
        match self {
            Gate::Vad { changes, .. } => std::mem::take(changes),
            Gate::Ptt { .. } => Vec::new(),
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

fn at_16k(samples: usize) -> Duration {
    Duration::from_secs_f64(samples as f64 / vad::SAMPLE_RATE_HZ as f64)
}

fn ptt_utterance(buf: &mut Vec<f32>, start: usize) -> Utterance {
    let samples = std::mem::take(buf);
    let end = at_16k(start + samples.len());
    Utterance {
        start: at_16k(start),
        end,
        // The key was released (or toggled) here: the speaker is done.
        last_voiced: end,
        samples,
        split: false,
    }
}

/// Where the front end's results go.
struct Outputs {
    utterances: Sender<Heard>,
    snapshots: Sender<Snapshot>,
    end_now: Receiver<EndNow>,
}

/// End the utterance that will be `turn` now: the pause after `last_voiced` (a snapshot's)
/// is the end of it. Ignored when anything was voiced since, whatever the order in which the
/// decision and the speech arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndNow {
    pub turn: TurnId,
    pub last_voiced: Duration,
}

#[allow(clippy::too_many_arguments)]
fn frontend(
    mut consumer: RingConsumer<f32>,
    reconnect: Receiver<RingConsumer<f32>>,
    rate_hz: u32,
    opts: &ListenOptions,
    ptt_commands: Option<Receiver<ptt::Action>>,
    hooks: Hooks,
    source_done: &AtomicBool,
    out: Outputs,
) -> Result<FrontendStats, ListenError> {
    let muted = || {
        hooks
            .mute
            .as_ref()
            .is_some_and(|m| m.load(Ordering::Relaxed))
    };
    let mut muted_ear = MutedEar::new(opts);
    let mut was_muted = false;
    let mut gate = match ptt_commands {
        None => Gate::Vad {
            detector: Detector::new(opts.detector, opts.aggressiveness),
            segmenter: Segmenter::new(opts.segmenter.clone()),
            frame: Vec::with_capacity(vad::FRAME_SAMPLES),
            changes: Vec::new(),
            events: hooks.events.clone(),
        },
        Some(commands) => Gate::Ptt {
            commands,
            recording: false,
            buf: Vec::new(),
            start: 0,
        },
    };
    let resample_err = |source: Box<dyn std::error::Error + Send + Sync>| ListenError::Resample {
        rate_hz,
        source,
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
            .map_err(|e| resample_err(e.into()))?,
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
    // 16 kHz samples fed to the gate so far.
    let mut pos = 0usize;
    // The number the next utterance will have.
    let mut turn = TurnId::FIRST;
    let mut done: Vec<Utterance> = Vec::new();
    let partial_samples = opts
        .partials_every
        .map(|d| (d.as_secs_f64() * vad::SAMPLE_RATE_HZ as f64) as usize);
    let mut last_partial = 0usize;
    let report = |event: ListenEvent| {
        if let Some(tx) = &hooks.events {
            let _ = tx.try_send(event);
        }
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
                        muted_ear.hear(&raw[..raw_len]);
                        raw[..raw_len].fill(0.0);
                    }
                    gate.feed(&raw[..raw_len], pos, &mut done);
                    pos += raw_len;
                }
                Some(rs) => {
                    let input = InterleavedSlice::new(&raw[..], 1, RESAMPLER_CHUNK)
                        .map_err(|e| resample_err(e.into()))?;
                    let mut output = InterleavedSlice::new_mut(&mut resampled[..], 1, out_max)
                        .map_err(|e| resample_err(e.into()))?;
                    let indexing = rubato::Indexing {
                        input_offset: 0,
                        output_offset: 0,
                        partial_len: flush_partial.then_some(raw_len),
                        active_channels_mask: None,
                    };
                    let (_, produced) = rs
                        .process_into_buffer(&input, &mut output, Some(&indexing))
                        .map_err(|e| resample_err(e.into()))?;
                    let drop = skip.min(produced);
                    skip -= drop;
                    if muted() {
                        muted_ear.hear(&resampled[drop..produced]);
                        resampled[..produced].fill(0.0);
                    }
                    gate.feed(&resampled[drop..produced], pos, &mut done);
                    pos += produced - drop;
                }
            }
            raw_len = 0;
            let now_muted = muted();
            if was_muted && !now_muted {
                muted_ear.unmuted();
            }
            was_muted = now_muted;
        } else if n == 0 {
            // Push-to-talk commands must be seen even when no audio arrives.
            gate.feed(&[], pos, &mut done);
        }
        // When things happened: the instant the stream position `at` (16 kHz samples) was
        // heard. What is still waiting in the ring and the resampler came in after it.
        let waiting =
            Duration::from_secs_f64((consumer.occupied_len() + raw_len) as f64 / rate_hz as f64);
        let heard_at = |offset: Duration| {
            let now = Instant::now();
            now.checked_sub(at_16k(pos).saturating_sub(offset) + waiting)
                .unwrap_or(now)
        };
        for change in gate.take_changes() {
            match change {
                vad::PauseChange::Paused => {
                    if let Some(so_far) = gate.so_far() {
                        let last_voiced_at = heard_at(so_far.last_voiced);
                        report(ListenEvent::Paused {
                            turn,
                            last_voiced_at,
                        });
                        if opts.speculate {
                            let _ = out.snapshots.try_send(Snapshot {
                                turn,
                                samples: so_far.samples,
                                start: so_far.start,
                                last_voiced: so_far.last_voiced,
                                last_voiced_at,
                                kind: SnapshotKind::Pause,
                            });
                        }
                    }
                }
                vad::PauseChange::Resumed => report(ListenEvent::Resumed {
                    turn,
                    at: Instant::now(),
                }),
            }
        }
        if let Some(every) = partial_samples
            && gate.in_speech()
            && pos >= last_partial + every
            && let Some(so_far) = gate.so_far()
        {
            last_partial = pos;
            let _ = out.snapshots.try_send(Snapshot {
                turn,
                samples: so_far.samples,
                start: so_far.start,
                last_voiced: so_far.last_voiced,
                last_voiced_at: heard_at(so_far.last_voiced),
                kind: SnapshotKind::Partial,
            });
        }
        while let Ok(end) = out.end_now.try_recv() {
            if end.turn == turn {
                done.extend(gate.end_now(end.last_voiced));
            }
        }
        for u in done.drain(..) {
            let heard = Heard {
                turn,
                ended_at: Instant::now(),
                last_voiced_at: heard_at(u.last_voiced),
                utterance: u,
            };
            turn = turn.next();
            if out.utterances.send(heard).is_err() {
                return Ok(gate.stats(&muted_ear));
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
        let _ = out.utterances.send(Heard {
            turn,
            ended_at: Instant::now(),
            last_voiced_at: Instant::now()
                .checked_sub(at_16k(pos).saturating_sub(u.last_voiced))
                .unwrap_or_else(Instant::now),
            utterance: u,
        });
    }
    muted_ear.unmuted();
    Ok(gate.stats(&muted_ear))
}

/// An open stream that delivers no samples for this long is treated as gone.
const STALL: Duration = Duration::from_secs(2);
/// How long closing a stream may take before capture goes on without it.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs capture until `stop` is set: opens the device, reports counters every few seconds,
/// and reopens the device after a stream error (a device that vanished and came back).
/// The producer moves into the callback; after a failure a new ring half is requested from
/// `reconnect`, which the front end hands out (the old consumer is drained and replaced).
fn run_capture_thread(
    device_name: Option<String>,
    rate_hz: u32,
    producer: RingProducer<f32>,
    stats: Arc<CaptureStats>,
    stop: Arc<AtomicBool>,
    reconnect: Sender<RingConsumer<f32>>,
) -> Result<(), capture::CaptureError> {
    let mut producer = Some(producer);
    let mut first_open = true;
    let mut last_report = Instant::now();
    let mut reported_overruns = 0;
    let mut reported_non_finite = 0;
    while !stop.load(Ordering::Relaxed) {
        let prod = match producer.take() {
            Some(p) => p,
            None => {
                // A fresh ring for the new stream; the front end switches to its consumer.
                let (p, c) = capture::ring(rate_hz, capture::RING_SECONDS);
                if reconnect.send(c).is_err() {
                    return Ok(());
                }
                p
            }
        };
        stats.stream_error.store(false, Ordering::Relaxed);
        let stream = match capture::start_stream(device_name.as_deref(), prod, &stats, rate_hz) {
            Ok(s) => s,
            Err((e, back)) => {
                if first_open {
                    // The device never opened: that is the user's error to see, not a retry.
                    return Err(e);
                }
                producer = back;
                tracing::warn!(stage = "capture", error = %e, "input device unavailable; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        first_open = false;
        tracing::info!(
            stage = "capture",
            device = device_name.as_deref().unwrap_or("default"),
            rate_hz,
            "capturing"
        );
        // A device can also fail silently: ALSA's PulseAudio plugin deadlocks in its own
        // threads when the server dies, and no error ever reaches cpal. A live input always
        // delivers samples (silence included), so a stream that stops delivering is dead.
        let mut last_samples = stats.samples.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        let mut stalled = false;
        while !stop.load(Ordering::Relaxed) && !stats.stream_error.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            let samples = stats.samples.load(Ordering::Relaxed);
            if samples != last_samples {
                last_samples = samples;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= STALL {
                stalled = true;
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                let overruns = stats.overruns.load(Ordering::Relaxed);
                if overruns > reported_overruns {
                    tracing::warn!(
                        stage = "capture",
                        dropped_samples = overruns - reported_overruns,
                        "ring full: samples dropped"
                    );
                    reported_overruns = overruns;
                }
                let non_finite = stats.non_finite.load(Ordering::Relaxed);
                if non_finite > reported_non_finite {
                    tracing::warn!(
                        stage = "capture",
                        samples = non_finite - reported_non_finite,
                        "the input device sent NaN or infinite samples: heard as silence"
                    );
                    reported_non_finite = non_finite;
                }
                tracing::debug!(
                    stage = "capture",
                    samples = stats.samples.load(Ordering::Relaxed),
                    overruns,
                    clipped = stats.clipped.load(Ordering::Relaxed),
                    "capture counters"
                );
                last_report = Instant::now();
            }
        }
        // Closing a dead stream can block for good (cpal's drop joins the stuck threads), so
        // it is closed on a thread of its own and waited for only briefly.
        let (closed_tx, closed_rx) = bounded::<()>(1);
        let _ = std::thread::Builder::new()
            .name("capture-close".into())
            .spawn(move || {
                drop(stream);
                let _ = closed_tx.send(());
            });
        if closed_rx.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::warn!(
                stage = "capture",
                "the input stream did not close; left behind"
            );
        }
        if stalled || stats.stream_error.load(Ordering::Relaxed) {
            tracing::warn!(
                stage = "capture",
                stalled,
                "input stream failed (device gone?); reopening"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// The push-to-talk thread: accepts control connections (non-blocking, so it notices `stop`),
/// polls SIGUSR1 and the hotkey, runs the state machine and sends its actions to the front end.
fn spawn_ptt(
    mode: ptt::Mode,
    hotkey: Option<crate::hotkey::Hotkey>,
    stop: Arc<AtomicBool>,
    actions: Sender<ptt::Action>,
    cancelled_through: Arc<AtomicU64>,
) -> Result<JoinHandle<Result<(), ListenError>>, ListenError> {
    let (path, listener) = ptt::bind()?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ListenError::Control(path.display().to_string(), e))?;
    let usr1 = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone())
        .map_err(|e| ListenError::Control("SIGUSR1".into(), e))?;
    tracing::info!(stage = "ptt", socket = %path.display(), ?mode, hotkey = hotkey.is_some(), "push-to-talk ready");
    Ok(spawn("ptt", move || {
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
    }))
}
