//! Microphone capture: cpal input stream → lock-free SPSC ring (ringbuf).
//!
//! A library: [`start_stream`] opens a device's stream, whose callback runs on the driver's
//! real-time thread and only calls [`CaptureBlock::process_block`]: it converts the device's
//! samples to f32, downmixes them to mono into a preallocated buffer and pushes that into the
//! ring. No allocation, lock, syscall, logging or channel send happens there (a test runs the
//! warmed-up body under a counting allocator). Samples that do not fit because the consumer
//! stalled are dropped and counted in an `AtomicU64`; stream errors set an `AtomicBool`. The
//! capture thread that owns the stream, reports the counters and reopens a device that
//! vanished is the listening stage's ([`crate::pipeline::listen`]).
//!
//! A decoded WAV can be fed through the same [`CaptureBlock`] (`--input`), at real-time pace or
//! as fast as the consumer takes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SizedSample};
use ringbuf::HeapRb;
use ringbuf::traits::{Observer, Producer, Split};

pub use ringbuf::HeapCons as RingConsumer;
pub use ringbuf::HeapProd as RingProducer;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no input device named {0:?}; `sotto devices` lists them")]
    NoSuchDevice(String),
    #[error("no default input device (is a sound server running?)")]
    NoDefaultDevice,
    #[error("input device {device:?}")]
    Device {
        device: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("input device {device:?}: unsupported sample format {format}")]
    Format { device: String, format: String },
}

/// Counters shared between the callback (writer) and the capture thread (reader).
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Mono samples pushed into the ring.
    pub samples: AtomicU64,
    /// Mono samples dropped because the ring was full.
    pub overruns: AtomicU64,
    /// Samples that were NaN or infinite (a broken driver or plug-in), heard as silence.
    pub non_finite: AtomicU64,
    /// Samples beyond full scale, clipped to ±1.
    pub clipped: AtomicU64,
    /// Set by the stream's error callback.
    pub stream_error: AtomicBool,
}

/// The body of the audio callback. Owns the ring's producer and a scratch buffer sized once.
pub struct CaptureBlock {
    producer: RingProducer<f32>,
    channels: usize,
    scratch: Vec<f32>,
    stats: Arc<CaptureStats>,
}

/// Largest block the scratch buffer holds in one pass (longer blocks are done in pieces).
const SCRATCH_FRAMES: usize = 4096;

impl CaptureBlock {
    pub fn new(producer: RingProducer<f32>, channels: usize, stats: Arc<CaptureStats>) -> Self {
        Self {
            producer,
            channels: channels.max(1),
            scratch: vec![0.0; SCRATCH_FRAMES],
            stats,
        }
    }

    /// Converts, downmixes and pushes one interleaved block. Real-time safe: no allocation,
    /// no lock, no blocking; a full ring drops samples and counts them.
    pub fn process_block<T>(&mut self, input: &[T])
    where
        T: Sample,
        f32: FromSample<T>,
    {
        let gain = 1.0 / self.channels as f32;
        for block in input.chunks(SCRATCH_FRAMES * self.channels) {
            let frames = block.len() / self.channels;
            let (mut non_finite, mut clipped) = (0u64, 0u64);
            for (out, frame) in self.scratch[..frames]
                .iter_mut()
                .zip(block.chunks_exact(self.channels))
            {
                let v = frame.iter().map(|s| f32::from_sample(*s)).sum::<f32>() * gain;
                // A NaN would stall speech recognition; a broken driver must not do that.
                *out = if !v.is_finite() {
                    non_finite += 1;
                    0.0
                } else if v.abs() > 1.0 {
                    clipped += 1;
                    v.clamp(-1.0, 1.0)
                } else {
                    v
                };
            }
            if non_finite > 0 {
                self.stats
                    .non_finite
                    .fetch_add(non_finite, Ordering::Relaxed);
            }
            if clipped > 0 {
                self.stats.clipped.fetch_add(clipped, Ordering::Relaxed);
            }
            let pushed = self.producer.push_slice(&self.scratch[..frames]);
            self.stats
                .samples
                .fetch_add(pushed as u64, Ordering::Relaxed);
            if pushed < frames {
                self.stats
                    .overruns
                    .fetch_add((frames - pushed) as u64, Ordering::Relaxed);
            }
        }
    }

    /// Room left in the ring, in samples (for the file feeder, which must not drop).
    pub fn vacant(&self) -> usize {
        self.producer.vacant_len()
    }
}

/// A ring big enough for `seconds` of mono audio at `rate_hz`.
pub fn ring(rate_hz: u32, seconds: u32) -> (RingProducer<f32>, RingConsumer<f32>) {
    HeapRb::<f32>::new((rate_hz * seconds) as usize).split()
}

/// Input and output devices, for `sotto devices`.
pub fn list_devices() -> Vec<String> {
    let host = cpal::default_host();
    let name = |d: &cpal::Device| {
        d.description()
            .map(|desc| desc.name().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let default_in = host.default_input_device().map(|d| name(&d));
    let default_out = host.default_output_device().map(|d| name(&d));
    let mut out = vec![format!("host: {:?}", host.id())];
    for (kind, devices, default) in [
        ("input ", host.input_devices().ok(), &default_in),
        ("output", host.output_devices().ok(), &default_out),
    ] {
        for d in devices.into_iter().flatten() {
            let n = name(&d);
            let config = match kind {
                "input " => d.default_input_config().ok(),
                _ => d.default_output_config().ok(),
            };
            let cfg = config
                .map(|c| {
                    format!(
                        "{} Hz, {} ch, {:?}",
                        c.sample_rate(),
                        c.channels(),
                        c.sample_format()
                    )
                })
                .unwrap_or_else(|| "no usable config".into());
            let mark = if default.as_deref() == Some(n.as_str()) {
                "*"
            } else {
                " "
            };
            out.push(format!("{kind} {mark} {n}  ({cfg})"));
        }
    }
    out
}

fn open_device(name: Option<&str>) -> Result<cpal::Device, CaptureError> {
    let host = cpal::default_host();
    match name {
        None => host
            .default_input_device()
            .ok_or(CaptureError::NoDefaultDevice),
        Some(want) => host
            .input_devices()
            .map_err(|e| CaptureError::Device {
                device: want.into(),
                source: Box::new(e),
            })?
            .find(|d| d.description().map(|x| x.name() == want).unwrap_or(false))
            .ok_or_else(|| CaptureError::NoSuchDevice(want.into())),
    }
}

/// The device's sample rate, so the ring and resampler can be sized before capture starts.
pub fn device_rate(name: Option<&str>) -> Result<u32, CaptureError> {
    let d = open_device(name)?;
    let c = d.default_input_config().map_err(|e| CaptureError::Device {
        device: name.unwrap_or("default").into(),
        source: Box::new(e),
    })?;
    Ok(c.sample_rate())
}

fn build_stream<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut block: CaptureBlock,
    stats: Arc<CaptureStats>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _| block.process_block(data),
        move |_err| stats.stream_error.store(true, Ordering::Relaxed),
        None,
    )
}

/// Opens the device's input stream at `rate_hz`, its callback feeding `producer`. On failure
/// the producer is handed back (when it was not consumed) so a retry can use it.
pub fn start_stream(
    device_name: Option<&str>,
    producer: RingProducer<f32>,
    stats: &Arc<CaptureStats>,
    expected_rate: u32,
) -> Result<cpal::Stream, (CaptureError, Option<RingProducer<f32>>)> {
    let label = device_name.unwrap_or("default").to_string();
    let device = match open_device(device_name) {
        Ok(d) => d,
        Err(e) => return Err((e, Some(producer))),
    };
    let supported = match device.default_input_config() {
        Ok(c) => c,
        Err(e) => {
            return Err((
                CaptureError::Device {
                    device: label,
                    source: Box::new(e),
                },
                Some(producer),
            ));
        }
    };
    let mut config = supported.config();
    // Keep the rate the pipeline was sized for.
    config.sample_rate = expected_rate;
    let block = CaptureBlock::new(producer, config.channels as usize, stats.clone());
    let s = stats.clone();
    let stream = match supported.sample_format() {
        cpal::SampleFormat::F32 => build_stream::<f32>(&device, config, block, s),
        cpal::SampleFormat::I16 => build_stream::<i16>(&device, config, block, s),
        cpal::SampleFormat::I32 => build_stream::<i32>(&device, config, block, s),
        cpal::SampleFormat::U16 => build_stream::<u16>(&device, config, block, s),
        cpal::SampleFormat::U8 => build_stream::<u8>(&device, config, block, s),
        other => {
            return Err((
                CaptureError::Format {
                    device: label,
                    format: format!("{other:?}"),
                },
                None,
            ));
        }
    };
    let stream = stream.map_err(|e| {
        (
            CaptureError::Device {
                device: label.clone(),
                source: Box::new(e),
            },
            None,
        )
    })?;
    stream.play().map_err(|e| {
        (
            CaptureError::Device {
                device: label,
                source: Box::new(e),
            },
            None,
        )
    })?;
    Ok(stream)
}

/// Seconds of audio the ring holds: enough to ride out a slow consumer.
pub const RING_SECONDS: u32 = 20;

/// Feeds a decoded clip through a [`CaptureBlock`] as if it were a microphone: in 10 ms blocks
/// at real-time pace, or as fast as the ring has room (`fast`). Never drops its audio.
pub fn feed_clip(
    clip: &crate::audio::Clip,
    mut block: CaptureBlock,
    fast: bool,
    stop: &AtomicBool,
) {
    let step = (clip.sample_rate_hz / 100).max(1) as usize;
    let t0 = Instant::now();
    for (i, chunk) in clip.samples.chunks(step).enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while block.vacant() < chunk.len() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        block.process_block(chunk);
        if !fast {
            let due =
                Duration::from_secs_f64((i + 1) as f64 * step as f64 / clip.sample_rate_hz as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Feeds a WAV file into the ring as [`feed_clip`] does, reading it 10 ms at a time.
pub fn feed_wav(
    wav: &crate::audio::WavFile,
    mut block: CaptureBlock,
    fast: bool,
    stop: &AtomicBool,
) -> Result<(), crate::audio::AudioError> {
    let step = (wav.sample_rate_hz / 100).max(1) as usize;
    let t0 = Instant::now();
    let mut fed = 0usize;
    wav.stream(step, |chunk| {
        while block.vacant() < chunk.len() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        block.process_block(chunk);
        fed += chunk.len();
        if !fast {
            let due = Duration::from_secs_f64(fed as f64 / wav.sample_rate_hz as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbuf::traits::Consumer;

    #[test]
    fn non_finite_samples_become_silence_and_loud_ones_are_clipped_and_counted() {
        let (p, mut c) = ring(16_000, 1);
        let stats = Arc::new(CaptureStats::default());
        let mut b = CaptureBlock::new(p, 1, stats.clone());
        b.process_block(&[0.5f32, f32::NAN, f32::INFINITY, 3.0, -0.25]);
        let mut out = [0.0f32; 5];
        assert_eq!(c.pop_slice(&mut out), 5);
        assert_eq!(out, [0.5, 0.0, 0.0, 1.0, -0.25]);
        assert_eq!(stats.non_finite.load(Ordering::Relaxed), 2);
        assert_eq!(stats.clipped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stereo_i16_is_downmixed_to_mono_f32() {
        let (p, mut c) = ring(16_000, 1);
        let stats = Arc::new(CaptureStats::default());
        let mut b = CaptureBlock::new(p, 2, stats.clone());
        b.process_block(&[i16::MAX, 0, i16::MIN, i16::MIN]);
        let mut out = [0.0f32; 2];
        assert_eq!(c.pop_slice(&mut out), 2);
        assert!(
            (out[0] - 0.5).abs() < 1e-3 && (out[1] + 1.0).abs() < 1e-3,
            "{out:?}"
        );
        assert_eq!(stats.samples.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_stalled_consumer_never_blocks_and_overflow_is_counted() {
        let (p, _c) = ring(1_000, 1); // 1000 samples, never read
        let stats = Arc::new(CaptureStats::default());
        let mut b = CaptureBlock::new(p, 1, stats.clone());
        let block = vec![0.1f32; 480];
        let t0 = Instant::now();
        for _ in 0..10 {
            b.process_block(&block);
        }
        assert!(
            t0.elapsed() < Duration::from_millis(50),
            "the callback blocked"
        );
        assert_eq!(stats.samples.load(Ordering::Relaxed), 1000);
        assert_eq!(stats.overruns.load(Ordering::Relaxed), 4800 - 1000);
    }
}
