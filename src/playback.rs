//! Speaker output: the rodio device, or a recorder that writes what would have been heard.
//!
//! [`Output`] is what the agent's playback thread owns: clips are queued and play one after
//! another; `stop` silences at once and drops what is queued (barge-in). Two outputs:
//! - [`Speaker`], the default device through rodio. Audio is resampled to the device's own
//!   rate here, so what is heard does not depend on the backend's converter.
//! - [`Recorder`], for headless use and tests: a virtual speaker that "plays" in real time
//!   against the wall clock and writes the timeline to a WAV file as it plays. A stop cuts the
//!   timeline at the current instant, so the file holds exactly what a listener would have
//!   heard, at the moment they would have heard it.
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
///
/// What has played is written as it plays (under a temporary name beside the file, renamed by
/// `finish`); only what is queued and not yet played is held in memory, so an hour of
/// headless agent costs no more than one reply.
pub struct Recorder {
    path: PathBuf,
    sample_rate_hz: u32,
    started: Instant,
    /// The file being written, made at the first write.
    file: Option<(
        tempfile::NamedTempFile,
        hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    )>,
    /// Samples of the timeline in the file.
    written: usize,
    /// The timeline from `written` on: queued, not played yet.
    queued: Vec<f32>,
    /// A write that failed where it could not be reported (`stop`): reported by `finish`.
    failed: Option<PlaybackError>,
}

impl Recorder {
    /// The file appears at `finish` (written beside it until then); the caller has checked it
    /// may be (re)placed.
    pub fn new(path: &Path, sample_rate_hz: u32) -> Self {
        Self::with_start(path, sample_rate_hz, Instant::now())
    }

    /// A recorder whose timeline starts at `started` (the session's start).
    pub fn with_start(path: &Path, sample_rate_hz: u32, started: Instant) -> Self {
        Self {
            path: path.to_path_buf(),
            sample_rate_hz,
            started,
            file: None,
            written: 0,
            queued: Vec::new(),
            failed: None,
        }
    }

    /// The sample the virtual speaker is playing now.
    fn now_sample(&self) -> usize {
        (self.started.elapsed().as_secs_f64() * self.sample_rate_hz as f64) as usize
    }

    fn at(&self, sample: usize) -> Instant {
        self.started + Duration::from_secs_f64(sample as f64 / self.sample_rate_hz as f64)
    }

    /// Where the timeline ends: after the last queued sample.
    fn end(&self) -> usize {
        self.written + self.queued.len()
    }

    /// Writes what has played by sample `now` to the file.
    fn play_until(&mut self, now: usize) -> Result<(), PlaybackError> {
        let played = now.saturating_sub(self.written).min(self.queued.len());
        let samples: Vec<f32> = self.queued.drain(..played).collect();
        self.write(&samples)
    }

    fn failed(&self, source: std::io::Error) -> PlaybackError {
        PlaybackError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// The WAV being written, made (under a temporary name beside the file) at the first call.
    fn writer(
        &mut self,
    ) -> Result<&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>, PlaybackError> {
        if self.file.is_none() {
            let tmp = audio::temp_file_beside(&self.path).map_err(|e| self.failed(e))?;
            let file = tmp.reopen().map_err(|e| self.failed(e))?;
            let spec = audio::pcm16_mono(self.sample_rate_hz);
            let writer = hound::WavWriter::new(std::io::BufWriter::new(file), spec)
                .map_err(|e| self.failed(std::io::Error::other(e)))?;
            self.file = Some((tmp, writer));
        }
        match self.file.as_mut() {
            Some((_, writer)) => Ok(writer),
            None => unreachable!("made just above"),
        }
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), PlaybackError> {
        if samples.is_empty() {
            return Ok(());
        }
        let writer = self.writer()?;
        let written: Result<(), hound::Error> = samples
            .iter()
            .try_for_each(|&x| writer.write_sample(audio::to_i16(x)));
        written.map_err(|e| self.failed(std::io::Error::other(e)))?;
        self.written += samples.len();
        Ok(())
    }
}

impl Output for Recorder {
    fn queue(&mut self, samples: &[f32], rate_hz: u32) -> Result<Instant, PlaybackError> {
        let now = self.now_sample();
        self.play_until(now)?;
        if self.end() < now {
            // Nothing was playing: silence up to now.
            self.write(&vec![0.0; now - self.end()])?;
        }
        let start = self.end();
        let resampled = audio::resample(samples, rate_hz, self.sample_rate_hz)?;
        self.queued.extend_from_slice(&resampled);
        Ok(self.at(start))
    }

    fn idle(&self) -> bool {
        self.now_sample() >= self.end()
    }

    fn stop(&mut self) {
        let now = self.now_sample();
        if let Err(e) = self.play_until(now) {
            self.failed.get_or_insert(e);
        }
        self.queued.clear();
    }

    fn finish(mut self: Box<Self>) -> Result<(), PlaybackError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // What is still queued plays out; a recorder that heard nothing writes an empty WAV.
        let rest = std::mem::take(&mut self.queued);
        self.write(&rest)?;
        self.writer()?;
        let Some((tmp, writer)) = self.file.take() else {
            unreachable!("made just above");
        };
        writer
            .finalize()
            .map_err(|e| self.failed(std::io::Error::other(e)))?;
        // Renamed only once whole: never a half file under the user's name.
        tmp.persist(&self.path).map_err(|e| self.failed(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WAV a recorder wrote, as samples in [-1, 1] (hound: the recorder's 1 kHz test rate
    /// is below what `audio::read_wav` accepts).
    fn written(path: &Path) -> Vec<f32> {
        hound::WavReader::open(path)
            .unwrap()
            .samples::<i16>()
            .map(|x| x.unwrap() as f32 / i16::MAX as f32)
            .collect()
    }

    #[test]
    fn the_recorder_plays_in_real_time_and_a_stop_cuts_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let mut r = Box::new(Recorder::new(&path, 1000));
        let starts = r.queue(&vec![0.5; 2000], 1000).unwrap(); // 2 s
        assert!(starts <= Instant::now());
        assert!(!r.idle());
        let second = r.queue(&[0.25; 1000], 1000).unwrap();
        assert!(second >= starts + Duration::from_millis(1990));
        std::thread::sleep(Duration::from_millis(100));
        r.stop();
        let len = r.end();
        assert!((90..400).contains(&len), "cut at {len}");
        assert!(r.idle());
        // The next clip starts now, after silence, not after the dropped audio.
        std::thread::sleep(Duration::from_millis(50));
        r.queue(&[1.0; 10], 1000).unwrap();
        assert!(r.end() >= len + 50);
        // What has played is on disk, not in memory.
        assert_eq!(r.queued.len(), 10);
        assert!(!path.exists(), "the file appears whole, at the end");
        r.finish().unwrap();
        let heard = written(&path);
        assert!(heard.len() >= len + 50, "{}", heard.len());
        assert!((heard[len / 2] - 0.5).abs() < 1e-3);
        assert_eq!(heard[len + 20], 0.0);
        assert!(heard[heard.len() - 10..].iter().all(|&x| x > 0.99));
    }

    #[test]
    fn a_recorder_that_heard_nothing_writes_an_empty_wav() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        Box::new(Recorder::new(&path, 16_000)).finish().unwrap();
        assert!(written(&path).is_empty());
    }
}
