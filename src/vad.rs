//! Voice activity detection and utterance segmentation, on 16 kHz mono audio.
//!
//! Vocabulary: a *sample* is one value; a *frame* is one analysis window of [`FRAME_MS`]
//! (480 samples). A [`Detector`] says whether a frame holds speech; the [`Segmenter`] smooths
//! those per-frame decisions into utterances: speech starts after `onset_frames` speech frames
//! in a row, ends after `hangover_frames` of silence, keeps `pre_roll` of audio before the
//! onset so first syllables are not cut, and splits an utterance that reaches `max_utterance`
//! at its quietest frame near the end, so a long monologue loses no words.
//!
//! The default detector is WebRTC's VAD (fixed Gaussian-mixture parameters shipped as source
//! code; not a trained network that needs an openness audit). An energy detector with an
//! adaptive noise floor is the alternative. Runs on the front-end thread.

use std::time::Duration;

pub const SAMPLE_RATE_HZ: u32 = 16_000;
pub const FRAME_MS: u32 = 30;
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE_HZ * FRAME_MS / 1000) as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// WebRTC's VAD (GMM, non-learned at run time).
    Webrtc,
    /// Frame energy against an adaptive noise floor.
    Energy,
}

/// Per-frame speech/non-speech decision.
pub enum Detector {
    Webrtc(WebrtcDetector),
    Energy(EnergyDetector),
}

/// WebRTC's VAD with a guard for digital silence.
///
/// WebRTC adapts its noise model only on frames with some energy: through digital silence
/// (a muted microphone, the gaps of a file, the mic muted while sotto speaks) the model keeps
/// whatever speech taught it, and over a long run it drifts until the pauses inside speech
/// read as speech and utterances merge (seen after ~26 min of `dictate`; a replay of an hour
/// of speech with 2 s gaps of zeros showed the speech it heard in the zeros growing from 21
/// to 48 frames per 5 minutes, and the way it split the same clip changing after 25 min).
/// So after [`RESET_AFTER_SILENT_FRAMES`] of digital silence in a row the detector starts
/// afresh: whatever it learned belongs to audio that is gone. Shorter runs of zeros (the gaps
/// between a synthesiser's words) stay WebRTC's to judge, with its own hangover.
pub struct WebrtcDetector {
    vad: Box<webrtc_vad::Vad>,
    mode: u8,
    buf: Vec<i16>,
    silent_run: usize,
    /// Times the detector was started afresh after digital silence.
    pub resets: u64,
}

/// One second of digital silence: the source was muted or the audio gated.
pub const RESET_AFTER_SILENT_FRAMES: usize = (1000 / FRAME_MS) as usize;

/// Samples within one 16-bit step of zero: digital silence, not a quiet room (a real
/// microphone's noise is tens of steps).
const DIGITAL_SILENCE: f32 = 1.0 / 32_768.0;

impl WebrtcDetector {
    fn new(aggressiveness: u8) -> Self {
        Self {
            vad: Self::vad(aggressiveness),
            mode: aggressiveness,
            buf: vec![0; FRAME_SAMPLES],
            silent_run: 0,
            resets: 0,
        }
    }

    fn vad(aggressiveness: u8) -> Box<webrtc_vad::Vad> {
        let mode = match aggressiveness {
            0 => webrtc_vad::VadMode::Quality,
            1 => webrtc_vad::VadMode::LowBitrate,
            2 => webrtc_vad::VadMode::Aggressive,
            _ => webrtc_vad::VadMode::VeryAggressive,
        };
        Box::new(webrtc_vad::Vad::new_with_rate_and_mode(
            webrtc_vad::SampleRate::Rate16kHz,
            mode,
        ))
    }

    pub fn is_speech(&mut self, frame: &[f32]) -> bool {
        if frame.iter().all(|s| s.abs() <= DIGITAL_SILENCE) {
            self.silent_run += 1;
            if self.silent_run == RESET_AFTER_SILENT_FRAMES {
                self.vad = Self::vad(self.mode);
                self.resets += 1;
            }
        } else {
            self.silent_run = 0;
        }
        for (o, s) in self.buf.iter_mut().zip(frame) {
            *o = crate::audio::to_i16(*s);
        }
        self.vad
            .is_voice_segment(&self.buf[..frame.len().min(FRAME_SAMPLES)])
            .unwrap_or(false)
    }
}

impl Detector {
    /// `aggressiveness` 0 (keeps most audio) … 3 (drops most non-speech).
    pub fn new(kind: DetectorKind, aggressiveness: u8) -> Self {
        match kind {
            DetectorKind::Webrtc => Detector::Webrtc(WebrtcDetector::new(aggressiveness)),
            DetectorKind::Energy => Detector::Energy(EnergyDetector::default()),
        }
    }

    pub fn is_speech(&mut self, frame: &[f32]) -> bool {
        match self {
            Detector::Webrtc(w) => w.is_speech(frame),
            Detector::Energy(e) => e.is_speech(frame),
        }
    }

    /// Times the detector started afresh after digital silence.
    pub fn resets(&self) -> u64 {
        match self {
            Detector::Webrtc(w) => w.resets,
            Detector::Energy(_) => 0,
        }
    }
}

/// Energy detector: speech when a frame is `margin_db` above the tracked noise floor.
#[derive(Debug)]
pub struct EnergyDetector {
    noise_db: f32,
    pub margin_db: f32,
}

impl Default for EnergyDetector {
    fn default() -> Self {
        Self {
            noise_db: -60.0,
            margin_db: 12.0,
        }
    }
}

impl EnergyDetector {
    pub fn is_speech(&mut self, frame: &[f32]) -> bool {
        let db = frame_db(frame);
        // The floor falls fast and rises slowly, so speech does not raise it.
        let rate = if db < self.noise_db { 0.3 } else { 0.01 };
        self.noise_db += (db - self.noise_db) * rate;
        db > self.noise_db.max(-70.0) + self.margin_db
    }
}

pub fn frame_db(frame: &[f32]) -> f32 {
    let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    10.0 * (energy + 1e-10).log10()
}

/// Smoothing parameters.
#[derive(Clone, Debug)]
pub struct SegmenterConfig {
    pub onset_frames: usize,
    /// Silence within an utterance that counts as a pause: where speculative work starts
    /// (the utterance may be over; the hangover decides if nothing else does).
    pub pause_frames: usize,
    /// Silence after which a listener's decision that the pause is the end ([`end_now`])
    /// takes effect: longer than a pause, so a breath inside a sentence ("What is the
    /// capital … of France?") does not end it, shorter than the hangover.
    ///
    /// [`end_now`]: Segmenter::end_now
    pub end_early_frames: usize,
    pub hangover_frames: usize,
    pub pre_roll_frames: usize,
    pub max_utterance_frames: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        let frames = |d: Duration| (d.as_millis() as usize).div_ceil(FRAME_MS as usize);
        Self {
            onset_frames: 3,
            pause_frames: frames(Duration::from_millis(200)),
            end_early_frames: frames(Duration::from_millis(400)),
            hangover_frames: frames(Duration::from_millis(600)),
            pre_roll_frames: frames(Duration::from_millis(300)),
            max_utterance_frames: frames(Duration::from_secs(25)),
        }
    }
}

/// One utterance: its audio and where it lies in the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Utterance {
    pub samples: Vec<f32>,
    /// Offset of the first sample from the start of the stream.
    pub start: Duration,
    pub end: Duration,
    /// Offset of the end of its last voiced frame (before the trailing silence the hangover
    /// waited through): when the speaker stopped.
    pub last_voiced: Duration,
    /// True when it was cut at the maximum length (speech continues in the next one).
    pub split: bool,
}

/// Turns per-frame decisions into utterances. Pure: frames in, utterances out.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    /// Frames before speech, the pre-roll (most recent last).
    history: std::collections::VecDeque<Vec<f32>>,
    /// Frames of the utterance in progress, with their energy.
    current: Vec<(Vec<f32>, f32)>,
    in_speech: bool,
    speech_run: usize,
    silence_run: usize,
    /// Frames seen so far; the start of the current utterance in frames.
    frames_seen: usize,
    start_frame: usize,
    /// Frames seen up to and including the last voiced frame.
    last_voiced_frame: usize,
    /// A pause or its end, since the caller last asked ([`Segmenter::take_pause_change`]).
    pause_change: Option<PauseChange>,
    paused: bool,
    /// A listener decided the pause after this last voiced frame is the end; it ends once
    /// the silence is [`SegmenterConfig::end_early_frames`] long, unless speech comes back.
    end_requested: Option<usize>,
}

/// An utterance in progress, so far.
#[derive(Clone, Debug, PartialEq)]
pub struct SoFar {
    pub samples: Vec<f32>,
    pub start: Duration,
    pub last_voiced: Duration,
}

/// Silence inside an utterance began to count as a pause, or speech came back after one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseChange {
    Paused,
    Resumed,
}

fn frames_to_time(frames: usize) -> Duration {
    Duration::from_millis((frames * FRAME_MS as usize) as u64)
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        Self {
            cfg,
            history: Default::default(),
            current: Vec::new(),
            in_speech: false,
            speech_run: 0,
            silence_run: 0,
            frames_seen: 0,
            start_frame: 0,
            last_voiced_frame: 0,
            pause_change: None,
            paused: false,
            end_requested: None,
        }
    }

    /// The pause change the last frames brought, once.
    pub fn take_pause_change(&mut self) -> Option<PauseChange> {
        self.pause_change.take()
    }

    /// The utterance in progress so far, up to a little after its last voiced frame (what a
    /// speculative transcription hears), with the stream offsets of its start and of its last
    /// voiced frame.
    pub fn so_far(&self) -> Option<SoFar> {
        if !self.in_speech || self.current.is_empty() {
            return None;
        }
        let voiced = self.last_voiced_frame.saturating_sub(self.start_frame);
        let keep = (voiced + self.cfg.hangover_frames.min(5)).min(self.current.len());
        let samples = self.current[..keep]
            .iter()
            .flat_map(|(f, _)| f.iter().copied())
            .collect();
        Some(SoFar {
            samples,
            start: frames_to_time(self.start_frame),
            last_voiced: self.last_voiced(),
        })
    }

    /// Stream offset of the end of the last voiced frame.
    fn last_voiced(&self) -> Duration {
        frames_to_time(self.last_voiced_frame)
    }

    /// A listener decided that the pause after `last_voiced` (a [`SoFar`]'s) is the end: the
    /// utterance ends as the hangover would have ended it, now if the silence is already
    /// [`SegmenterConfig::end_early_frames`] long, else from [`Segmenter::push`] once it is
    /// (None here then). Nothing ends when no utterance is in progress, when anything was
    /// voiced after `last_voiced` (the decision was made on words that are no longer the last
    /// ones), or when speech comes back before the silence is long enough.
    pub fn end_now(&mut self, last_voiced: Duration) -> Option<Utterance> {
        if !self.in_speech || !self.paused || self.last_voiced() != last_voiced {
            return None;
        }
        if self.silence_run < self.cfg.end_early_frames {
            self.end_requested = Some(self.last_voiced_frame);
            return None;
        }
        self.end_at_pause()
    }

    fn end_at_pause(&mut self) -> Option<Utterance> {
        let keep = self.current.len() - self.silence_run + self.silence_run.min(5);
        self.current.truncate(keep);
        self.finish(false)
    }

    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Feeds one frame and the detector's decision for it.
    pub fn push(&mut self, frame: &[f32], speech: bool) -> Option<Utterance> {
        self.frames_seen += 1;
        if speech {
            self.last_voiced_frame = self.frames_seen;
        }
        let db = frame_db(frame);
        if !self.in_speech {
            self.history.push_back(frame.to_vec());
            self.speech_run = if speech { self.speech_run + 1 } else { 0 };
            let keep = self.cfg.pre_roll_frames + self.speech_run;
            while self.history.len() > keep.max(1) {
                self.history.pop_front();
            }
            if self.speech_run >= self.cfg.onset_frames {
                self.in_speech = true;
                self.silence_run = 0;
                self.start_frame = self.frames_seen - self.history.len();
                self.current = self.history.drain(..).map(|f| (f, db)).collect();
            }
            return None;
        }
        self.current.push((frame.to_vec(), db));
        self.silence_run = if speech { 0 } else { self.silence_run + 1 };
        if self.silence_run == self.cfg.pause_frames
            && self.cfg.pause_frames < self.cfg.hangover_frames
        {
            self.paused = true;
            self.pause_change = Some(PauseChange::Paused);
        } else if speech && self.paused {
            self.paused = false;
            self.pause_change = Some(PauseChange::Resumed);
        }
        if speech {
            self.end_requested = None;
        } else if self.end_requested == Some(self.last_voiced_frame)
            && self.silence_run >= self.cfg.end_early_frames
            && self.silence_run < self.cfg.hangover_frames
        {
            return self.end_at_pause();
        }
        if self.silence_run >= self.cfg.hangover_frames {
            // Keep a little of the trailing silence, drop the rest.
            let keep = self.current.len() - self.silence_run + self.cfg.hangover_frames.min(5);
            self.current.truncate(keep);
            return self.finish(false);
        }
        if self.current.len() >= self.cfg.max_utterance_frames {
            return self.split_at_quietest();
        }
        None
    }

    /// Ends the utterance in progress, if any (end of input, Ctrl-C).
    pub fn flush(&mut self) -> Option<Utterance> {
        if self.in_speech && !self.current.is_empty() {
            self.finish(false)
        } else {
            None
        }
    }

    fn finish(&mut self, split: bool) -> Option<Utterance> {
        let frames = std::mem::take(&mut self.current);
        self.in_speech = split;
        self.paused = false;
        self.end_requested = None;
        self.pause_change = None;
        self.speech_run = 0;
        self.silence_run = 0;
        let n = frames.len();
        let start = self.start_frame;
        self.start_frame += n;
        let samples: Vec<f32> = frames.into_iter().flat_map(|(f, _)| f).collect();
        let at = |frame: usize| Duration::from_millis((frame * FRAME_MS as usize) as u64);
        // Cut for length, the speaker is still talking at its end.
        let last_voiced = if split {
            start + n
        } else {
            self.last_voiced_frame.clamp(start, start + n)
        };
        Some(Utterance {
            samples,
            start: at(start),
            end: at(start + n),
            last_voiced: at(last_voiced),
            split,
        })
    }

    /// Cuts a too-long utterance at the quietest frame of its last 3 s (a pause between
    /// words), carrying the rest into the next utterance.
    fn split_at_quietest(&mut self) -> Option<Utterance> {
        let window = (3000 / FRAME_MS as usize).min(self.current.len() - 1);
        let from = self.current.len() - window;
        let cut = (from..self.current.len())
            .min_by(|&a, &b| self.current[a].1.total_cmp(&self.current[b].1))
            .unwrap_or(self.current.len());
        let rest = self.current.split_off(cut);
        let out = self.finish(true);
        self.current = rest;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(level: f32) -> Vec<f32> {
        (0..FRAME_SAMPLES)
            .map(|i| level * (i as f32 * 0.3).sin())
            .collect()
    }

    fn feed(seg: &mut Segmenter, pattern: &[(bool, usize)]) -> Vec<Utterance> {
        let mut out = Vec::new();
        for &(speech, n) in pattern {
            for _ in 0..n {
                let f = frame(if speech { 0.5 } else { 0.001 });
                out.extend(seg.push(&f, speech));
            }
        }
        out.extend(seg.flush());
        out
    }

    #[test]
    fn three_utterances_separated_by_silence() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        let u = feed(
            &mut seg,
            &[
                (false, 20),
                (true, 30),
                (false, 40),
                (true, 20),
                (false, 40),
                (true, 25),
                (false, 40),
            ],
        );
        assert_eq!(
            u.len(),
            3,
            "{:?}",
            u.iter().map(|u| (u.start, u.end)).collect::<Vec<_>>()
        );
        for w in u.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }

    #[test]
    fn pre_roll_keeps_audio_before_the_onset() {
        let cfg = SegmenterConfig::default();
        let pre = cfg.pre_roll_frames;
        let mut seg = Segmenter::new(cfg);
        let u = feed(&mut seg, &[(false, 50), (true, 30), (false, 40)]);
        assert_eq!(u.len(), 1);
        // Speech began at frame 50; the utterance starts pre_roll frames earlier.
        assert_eq!(
            u[0].start,
            Duration::from_millis(((50 - pre) * FRAME_MS as usize) as u64)
        );
    }

    #[test]
    fn a_pause_is_reported_then_its_resumption_and_the_utterance_stays_whole() {
        let cfg = SegmenterConfig::default();
        let (pause, hang) = (cfg.pause_frames, cfg.hangover_frames);
        let mut seg = Segmenter::new(cfg);
        let mut changes = Vec::new();
        let mut out = Vec::new();
        for (speech, n) in [
            (true, 20),
            (false, pause + 2),
            (true, 10),
            (false, hang + 1),
        ] {
            for _ in 0..n {
                out.extend(seg.push(&frame(if speech { 0.5 } else { 0.001 }), speech));
                changes.extend(seg.take_pause_change());
            }
        }
        use PauseChange::*;
        assert_eq!(changes, vec![Paused, Resumed, Paused]);
        assert_eq!(out.len(), 1, "one utterance across the pause");
    }

    #[test]
    fn ending_now_in_a_pause_gives_what_was_said_and_its_last_voiced_frame() {
        let cfg = SegmenterConfig::default();
        let (pause, end_early) = (cfg.pause_frames, cfg.end_early_frames);
        let mut seg = Segmenter::new(cfg);
        for _ in 0..20 {
            assert!(seg.push(&frame(0.5), true).is_none());
        }
        let speaking = seg.so_far().unwrap();
        assert!(
            seg.end_now(speaking.last_voiced).is_none(),
            "not while speech goes on"
        );
        for _ in 0..pause {
            assert!(seg.push(&frame(0.001), false).is_none());
        }
        let so_far = seg.so_far().unwrap();
        // Decided at the pause; it takes effect once the silence is long enough.
        assert!(seg.end_now(so_far.last_voiced).is_none());
        let mut u = None;
        for _ in pause..end_early {
            assert!(u.is_none(), "ended after {} silent frames", end_early);
            u = seg.push(&frame(0.001), false);
        }
        let u = u.expect("ended when the silence reached the early end");
        assert_eq!(u.last_voiced, so_far.last_voiced);
        assert_eq!(u.start, so_far.start);
        assert_eq!(u.last_voiced, Duration::from_millis(20 * FRAME_MS as u64));
        assert_eq!(
            u.samples, so_far.samples,
            "the speculation heard what the final pass hears"
        );
        assert!(seg.so_far().is_none());
    }

    #[test]
    fn a_decision_on_words_that_are_no_longer_the_last_ends_nothing() {
        let cfg = SegmenterConfig::default();
        let (pause, end_early) = (cfg.pause_frames, cfg.end_early_frames);
        let mut seg = Segmenter::new(cfg);
        let push = |seg: &mut Segmenter, speech: bool, n: usize| {
            for _ in 0..n {
                assert!(
                    seg.push(&frame(if speech { 0.5 } else { 0.001 }), speech)
                        .is_none()
                );
            }
        };
        push(&mut seg, true, 20);
        push(&mut seg, false, pause);
        let first_pause = seg.so_far().unwrap();
        // Speech came back, then a second pause, before the first one's decision arrived.
        push(&mut seg, true, 10);
        push(&mut seg, false, end_early);
        assert!(seg.end_now(first_pause.last_voiced).is_none());
        let second = seg.so_far().unwrap();
        let u = seg.end_now(second.last_voiced).unwrap();
        assert_eq!(u.last_voiced, second.last_voiced);

        // A decision at a pause that speech then continues after ends nothing.
        let mut seg = Segmenter::new(SegmenterConfig::default());
        push(&mut seg, true, 20);
        push(&mut seg, false, pause);
        assert!(seg.end_now(seg.so_far().unwrap().last_voiced).is_none());
        push(&mut seg, true, 5);
        push(&mut seg, false, end_early);
        assert!(seg.so_far().is_some(), "still one utterance in progress");
    }

    #[test]
    fn a_blip_shorter_than_the_onset_is_ignored() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        assert!(feed(&mut seg, &[(false, 20), (true, 2), (false, 40)]).is_empty());
    }

    #[test]
    fn a_monologue_is_split_at_the_maximum_without_losing_audio() {
        let cfg = SegmenterConfig {
            max_utterance_frames: 100,
            ..SegmenterConfig::default()
        };
        let mut seg = Segmenter::new(cfg);
        // 400 frames of speech with a short quiet gap every 37 frames.
        let mut total_speech_samples = 0;
        let mut out = Vec::new();
        for i in 0..400 {
            let quiet = i % 37 == 36;
            let f = frame(if quiet { 0.01 } else { 0.5 });
            total_speech_samples += f.len();
            out.extend(seg.push(&f, true));
        }
        out.extend(seg.flush());
        assert!(out.len() >= 4, "{}", out.len());
        assert!(out.iter().all(|u| u.samples.len() <= 100 * FRAME_SAMPLES));
        assert!(out[..out.len() - 1].iter().all(|u| u.split));
        let kept: usize = out.iter().map(|u| u.samples.len()).sum();
        // Everything after the onset is kept (the first onset frames are in the pre-roll).
        assert_eq!(kept, total_speech_samples);
        for w in out.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous");
        }
    }

    #[test]
    fn energy_detector_tracks_the_noise_floor() {
        let mut d = EnergyDetector::default();
        for _ in 0..50 {
            assert!(!d.is_speech(&frame(0.002)));
        }
        assert!(d.is_speech(&frame(0.3)));
    }
}
