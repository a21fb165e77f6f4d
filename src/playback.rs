//! Speaker output: the rodio device, or a recorder that writes what would have been heard.
//!
//! [`Output`] is what the agent's playback thread owns: clips are queued and play one after
//! another; `stop` silences at once and drops what is queued (barge-in). Two outputs:
//! - [`Speaker`], the default device through rodio. Audio is resampled to the device's own
//!   rate here, so what is heard does not depend on the backend's converter.
//! - [`Recorder`], for headless use and tests: a virtual speaker that "plays" in real time
//!   against the wall clock and keeps the timeline in memory. A stop cuts the timeline at the
//!   current instant, so the WAV it writes holds exactly what a listener would have heard, at
//!   the moment they would have heard it.
//!
//! Both are used from one thread (rodio's device handle is not `Send` on every platform, so
//! the playback thread opens its output itself).

use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rodio::{DeviceSinkBuilder, MixerDeviceSink, Player, buffer::SamplesBuffer};

use crate::audio;

#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error(
        "no audio output device is available ({0}); use -o FILE.wav to write the audio instead"
    )]
    NoDevice(String),
    #[error(transparent)]
    Resample(#[from] audio::AudioError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the agent's speech goes.
pub trait Output {
    /// Queues mono audio at `rate_hz` after whatever is queued; returns when it starts playing.
    fn queue(&mut self, samples: &[f32], rate_hz: u32) -> Result<Instant, PlaybackError>;
    /// True when everything queued has played.
    fn idle(&self) -> bool;
    /// Silences at once and drops everything queued.
    fn stop(&mut self);
    /// Ends the output (the recorder writes its file).
    fn finish(self: Box<Self>) -> Result<(), PlaybackError>;
}

/// Silence played when the device opens.
const LEAD_IN_MS: u32 = 150;

pub struct Speaker {
    sink: MixerDeviceSink,
    player: Player,
    pub sample_rate_hz: u32,
    pub channels: u16,
    /// When what is queued will have played (an estimate from the clips' lengths).
    busy_until: Instant,
}

impl Speaker {
    /// Opens the default output device.
    pub fn open_default() -> Result<Self, PlaybackError> {
        let mut sink = DeviceSinkBuilder::open_default_sink()
            .map_err(|e| PlaybackError::NoDevice(e.to_string()))?;
        sink.log_on_drop(false);
        let sample_rate_hz = sink.config().sample_rate().get();
        let channels = sink.config().channel_count().get();
        let player = Player::connect_new(sink.mixer());
        // Devices (PulseAudio's especially) can drop the first few milliseconds after a
        // stream starts; a short lead-in of silence keeps the first syllable.
        let lead_in = vec![0.0; (sample_rate_hz / 1000 * LEAD_IN_MS) as usize];
        let rate = NonZero::new(sample_rate_hz).unwrap_or(NonZero::<u32>::MIN);
        player.append(SamplesBuffer::new(NonZero::<u16>::MIN, rate, lead_in));
        Ok(Self {
            sink,
            player,
            sample_rate_hz,
            channels,
            busy_until: Instant::now() + Duration::from_millis(LEAD_IN_MS.into()),
        })
    }

    /// Blocks until everything queued has played.
    pub fn wait(&self) {
        self.player.sleep_until_end();
    }
}

impl Output for Speaker {
    fn queue(&mut self, samples: &[f32], rate_hz: u32) -> Result<Instant, PlaybackError> {
        let now = Instant::now();
        let starts = self.busy_until.max(now);
        if samples.is_empty() {
            return Ok(starts);
        }
        let resampled = audio::resample(samples, rate_hz, self.sample_rate_hz)?;
        let seconds = resampled.len() as f64 / self.sample_rate_hz as f64;
        let rate = NonZero::new(self.sample_rate_hz).unwrap_or(NonZero::<u32>::MIN);
        self.player
            .append(SamplesBuffer::new(NonZero::<u16>::MIN, rate, resampled));
        self.busy_until = starts + Duration::from_secs_f64(seconds);
        Ok(starts)
    }

    fn idle(&self) -> bool {
        self.player.empty()
    }

    fn stop(&mut self) {
        // A dropped player is silenced at the mixer's next access (every few ms); a fresh
        // one takes the next turn's audio without waiting for the old queue to drain.
        let old = std::mem::replace(&mut self.player, Player::connect_new(self.sink.mixer()));
        old.stop();
        drop(old);
        self.busy_until = Instant::now();
    }

    fn finish(self: Box<Self>) -> Result<(), PlaybackError> {
        self.player.sleep_until_end();
        Ok(())
    }
}

/// A virtual speaker that plays against the wall clock and writes the timeline to a WAV file.
pub struct Recorder {
    path: PathBuf,
    sample_rate_hz: u32,
    started: Instant,
    timeline: Vec<f32>,
}

impl Recorder {
    /// The file is written by `finish`; the caller has checked it may be (re)placed.
    pub fn new(path: &Path, sample_rate_hz: u32) -> Self {
        Self::with_start(path, sample_rate_hz, Instant::now())
    }

    /// A recorder whose timeline starts at `started` (the session's start).
    pub fn with_start(path: &Path, sample_rate_hz: u32, started: Instant) -> Self {
        Self {
            path: path.to_path_buf(),
            sample_rate_hz,
            started,
            timeline: Vec::new(),
        }
    }

    /// The sample the virtual speaker is playing now.
    fn now_sample(&self) -> usize {
        (self.started.elapsed().as_secs_f64() * self.sample_rate_hz as f64) as usize
    }

    fn at(&self, sample: usize) -> Instant {
        self.started + Duration::from_secs_f64(sample as f64 / self.sample_rate_hz as f64)
    }

    pub fn timeline(&self) -> &[f32] {
        &self.timeline
    }
}

impl Output for Recorder {
    fn queue(&mut self, samples: &[f32], rate_hz: u32) -> Result<Instant, PlaybackError> {
        let now = self.now_sample();
        if self.timeline.len() < now {
            self.timeline.resize(now, 0.0);
        }
        let start = self.timeline.len();
        let resampled = audio::resample(samples, rate_hz, self.sample_rate_hz)?;
        self.timeline.extend_from_slice(&resampled);
        Ok(self.at(start))
    }

    fn idle(&self) -> bool {
        self.now_sample() >= self.timeline.len()
    }

    fn stop(&mut self) {
        let now = self.now_sample();
        self.timeline.truncate(now);
    }

    fn finish(self: Box<Self>) -> Result<(), PlaybackError> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let write = |source| PlaybackError::Write {
            path: self.path.clone(),
            source,
        };
        // Written whole under a temporary name, then renamed: never a half file.
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
        audio::write_wav(tmp.path(), &self.timeline, self.sample_rate_hz)?;
        tmp.persist(&self.path).map_err(|e| write(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_plays_in_real_time_and_a_stop_cuts_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::new(&dir.path().join("out.wav"), 1000);
        let starts = r.queue(&vec![0.5; 2000], 1000).unwrap(); // 2 s
        assert!(starts <= Instant::now());
        assert!(!r.idle());
        let second = r.queue(&[0.25; 1000], 1000).unwrap();
        assert!(second >= starts + Duration::from_millis(1990));
        std::thread::sleep(Duration::from_millis(100));
        r.stop();
        let len = r.timeline().len();
        assert!((90..400).contains(&len), "cut at {len}");
        assert!(r.idle());
        // The next clip starts now, after silence, not after the dropped audio.
        std::thread::sleep(Duration::from_millis(50));
        r.queue(&[1.0; 10], 1000).unwrap();
        assert!(r.timeline().len() >= len + 40);
        assert_eq!(r.timeline()[len + 20], 0.0);
    }
}
