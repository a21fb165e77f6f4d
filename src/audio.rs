//! Audio files in and out, and sample-rate conversion.
//!
//! Decoding (hound): WAV at any rate from 4 to 192 kHz, any channel count, 8/16/24/32-bit
//! integer or 32-bit float, from a file or stdin, downmixed to mono f32 in [-1, 1].
//! Resampling: rubato's FFT resampler over a whole clip, with its delay trimmed.
//!
//! "Sample" here is one value of one channel; a "frame" is one sample per channel.

use std::io::Read;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Whisper's input rate.
pub const WHISPER_SAMPLE_RATE_HZ: u32 = 16_000;
const MIN_RATE_HZ: u32 = 4_000;
const MAX_RATE_HZ: u32 = 192_000;
/// Frames per resampler chunk: small enough for low latency in the live path.
const RESAMPLER_CHUNK_FRAMES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the file is empty (0 bytes), not a WAV recording")]
    EmptyFile { path: PathBuf },
    #[error("{path}: not a WAV file ({reason}); sotto reads RIFF/WAVE PCM or float audio")]
    NotWav { path: PathBuf, reason: String },
    #[error("{path}: the WAV file holds no audio (0 samples)")]
    NoSamples { path: PathBuf },
    #[error("{path}: unsupported WAV format: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: the WAV data is cut short or damaged")]
    Damaged {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error(
        "{path}: sample {index} (at {at_s:.2} s) is {value}: the float audio is corrupt (NaN or \
         infinite samples would stall speech recognition)"
    )]
    NonFinite {
        path: PathBuf,
        index: usize,
        at_s: f64,
        value: f32,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("resampling {from_hz} Hz to {to_hz} Hz failed")]
    Resample {
        from_hz: u32,
        to_hz: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Mono audio at a known rate.
#[derive(Clone, Debug)]
pub struct Clip {
    pub sample_rate_hz: u32,
    pub samples: Vec<f32>,
    /// Channels in the source before downmixing.
    pub source_channels: u16,
}

impl Clip {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate_hz as f64
    }
}

/// Reads a WAV file, or stdin when `path` is `-`, into mono f32.
pub fn read_wav(path: &Path) -> Result<Clip, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(io)?;
        buf
    } else {
        std::fs::read(path).map_err(io)?
    };
    decode_wav(path, &bytes)
}

/// Decodes WAV bytes; `path` only names the source in errors.
pub fn decode_wav(path: &Path, bytes: &[u8]) -> Result<Clip, AudioError> {
    let path = path.to_path_buf();
    if bytes.is_empty() {
        return Err(AudioError::EmptyFile { path });
    }
    let reader = hound::WavReader::new(bytes).map_err(|e| match e {
        hound::Error::FormatError(reason) => AudioError::NotWav {
            path: path.clone(),
            reason: reason.to_string(),
        },
        hound::Error::Unsupported => AudioError::Unsupported {
            path: path.clone(),
            reason: "a WAV encoding other than PCM integer or IEEE float".into(),
        },
        hound::Error::IoError(e) => AudioError::NotWav {
            path: path.clone(),
            reason: format!("header cut short: {e}"),
        },
        other => AudioError::NotWav {
            path: path.clone(),
            reason: other.to_string(),
        },
    })?;
    let spec = reader.spec();
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&spec.sample_rate) {
        return Err(AudioError::Unsupported {
            path,
            reason: format!(
                "sample rate {} Hz (supported: {MIN_RATE_HZ}–{MAX_RATE_HZ} Hz)",
                spec.sample_rate
            ),
        });
    }
    if spec.channels == 0 {
        return Err(AudioError::Unsupported {
            path,
            reason: "zero channels".into(),
        });
    }
    let mut interleaved = read_samples(reader, &path)?;
    let channels = spec.channels as usize;
    if let Some(index) = interleaved.iter().position(|x| !x.is_finite()) {
        return Err(AudioError::NonFinite {
            at_s: (index / channels) as f64 / spec.sample_rate as f64,
            value: interleaved[index],
            index,
            path,
        });
    }
    // Float audio may exceed full scale; beyond ±1 it is clipped (and counted in the log).
    let mut clipped = 0usize;
    for x in interleaved.iter_mut().filter(|x| x.abs() > 1.0) {
        *x = x.clamp(-1.0, 1.0);
        clipped += 1;
    }
    if clipped > 0 {
        tracing::warn!(
            file = %path.display(),
            clipped,
            "samples beyond full scale were clipped"
        );
    }
    if interleaved.len() < channels {
        return Err(AudioError::NoSamples { path });
    }
    let samples = downmix(&interleaved, channels);
    Ok(Clip {
        sample_rate_hz: spec.sample_rate,
        samples,
        source_channels: spec.channels,
    })
}

fn read_samples(reader: hound::WavReader<&[u8]>, path: &Path) -> Result<Vec<f32>, AudioError> {
    let spec = reader.spec();
    let damaged = |source: hound::Error| AudioError::Damaged {
        path: path.to_path_buf(),
        source,
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(damaged),
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(damaged)
        }
        (format, bits) => Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{bits}-bit {format:?} samples"),
        }),
    }
}

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    let gain = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() * gain)
        .collect()
}

/// Resamples a whole mono clip. Output length is `round(len * to / from)`, with the
/// resampler's delay trimmed so the output lines up with the input.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    if from_hz == to_hz || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let err = |source: Box<dyn std::error::Error + Send + Sync>| AudioError::Resample {
        from_hz,
        to_hz,
        source,
    };
    let mut rs = Fft::<f32>::new(
        from_hz as usize,
        to_hz as usize,
        RESAMPLER_CHUNK_FRAMES,
        1,
        FixedSync::Input,
    )
    .map_err(|e| err(e.into()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| err(e.into()))?;
    let needed = rs.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0f32; needed];
    let mut output = InterleavedSlice::new_mut(&mut out, 1, needed).map_err(|e| err(e.into()))?;
    let (_, produced) = rs
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| err(e.into()))?;
    out.truncate(produced);
    Ok(out)
}

/// Reads any supported WAV and returns 16 kHz mono, ready for Whisper.
pub fn read_for_whisper(path: &Path) -> Result<Clip, AudioError> {
    let clip = read_wav(path)?;
    let samples = resample(&clip.samples, clip.sample_rate_hz, WHISPER_SAMPLE_RATE_HZ)?;
    Ok(Clip {
        sample_rate_hz: WHISPER_SAMPLE_RATE_HZ,
        samples,
        source_channels: clip.source_channels,
    })
}

/// Writes mono f32 audio as a 16-bit PCM WAV file.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate_hz: u32) -> Result<(), AudioError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: sample_rate_hz,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let werr = |source| AudioError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(werr)?;
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16)
            .map_err(werr)?;
    }
    w.finalize().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn resampled_length_follows_the_rate_ratio() {
        for (from, to) in [
            (8_000, 16_000),
            (22_050, 16_000),
            (44_100, 16_000),
            (48_000, 16_000),
        ] {
            let x = sine(from, 1.3, 440.0);
            let y = resample(&x, from, to).unwrap();
            let expected = (x.len() as f64 * to as f64 / from as f64).round() as i64;
            assert!(
                (y.len() as i64 - expected).abs() <= 1,
                "{from}->{to}: {} vs {expected}",
                y.len()
            );
        }
    }

    #[test]
    fn resampling_keeps_a_tone_aligned_and_level() {
        let x = sine(48_000, 1.0, 440.0);
        let y = resample(&x, 48_000, 16_000).unwrap();
        let reference = sine(16_000, 1.0, 440.0);
        // Skip the edges; in the middle the tone must match in phase and amplitude.
        let err: f32 = y[2000..14000]
            .iter()
            .zip(&reference[2000..14000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "max error {err}");
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
    }

    #[test]
    fn text_is_not_wav() {
        let e = decode_wav(Path::new("notes.txt"), b"hello, this is text\n").unwrap_err();
        assert!(matches!(e, AudioError::NotWav { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"));
    }

    #[test]
    fn empty_file_is_named() {
        let e = decode_wav(Path::new("x.wav"), b"").unwrap_err();
        assert!(matches!(e, AudioError::EmptyFile { .. }));
    }
}

#[cfg(test)]
mod non_finite_tests {
    use super::*;

    fn float_wav(samples: &[f32]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    #[test]
    fn nan_and_infinite_samples_are_an_error_naming_the_file_and_time() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut samples = vec![0.1f32; 32_000];
            samples[24_000] = bad;
            let e = decode_wav(Path::new("x.wav"), &float_wav(&samples)).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("x.wav") && text.contains("1.50 s"), "{text}");
        }
    }

    #[test]
    fn samples_beyond_full_scale_are_clipped() {
        let clip = decode_wav(Path::new("x.wav"), &float_wav(&[0.5, 1e30, -7.0, -0.25])).unwrap();
        assert_eq!(clip.samples, vec![0.5, 1.0, -1.0, -0.25]);
    }
}
