//! Speaker output through rodio.
//!
//! [`Speaker`] owns the output device (rodio's mixer sink). Audio is resampled to the device's
//! own rate here, so what is heard does not depend on the backend's converter. For now the
//! owner plays clips one after another and waits; the agent's playback thread builds on this.

use std::num::NonZero;

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
}

/// Silence played when the device opens.
const LEAD_IN_MS: u32 = 150;

pub struct Speaker {
    /// Kept alive: dropping it closes the device.
    _sink: MixerDeviceSink,
    player: Player,
    pub sample_rate_hz: u32,
    pub channels: u16,
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
            _sink: sink,
            player,
            sample_rate_hz,
            channels,
        })
    }

    /// Queues mono audio at `rate_hz`, resampled to the device's rate.
    pub fn queue(&self, samples: &[f32], rate_hz: u32) -> Result<(), PlaybackError> {
        if samples.is_empty() {
            return Ok(());
        }
        let resampled = audio::resample(samples, rate_hz, self.sample_rate_hz)?;
        let rate = NonZero::new(self.sample_rate_hz).unwrap_or(NonZero::<u32>::MIN);
        self.player
            .append(SamplesBuffer::new(NonZero::<u16>::MIN, rate, resampled));
        Ok(())
    }

    /// Blocks until everything queued has played.
    pub fn wait(&self) {
        self.player.sleep_until_end();
    }

    /// Stops at once and drops what is queued.
    pub fn stop(&self) {
        self.player.stop();
    }
}
