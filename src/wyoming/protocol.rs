//! Wyoming's framing: one JSON header line per event (`type`, optional `data`,
//! `data_length`, `payload_length`, `version`), then `data_length` bytes of JSON merged into
//! `data`, then `payload_length` bytes of binary payload (PCM audio for `audio-chunk`).
//!
//! Every length is checked against [`Limits`] before anything is read or allocated, so a
//! header claiming a 2 GB payload costs nothing but an error.

use std::io::{BufRead, Read, Write};

use serde_json::{Map, Value};

/// The protocol version written in every header: the Python `wyoming` release sotto's tests
/// talk to.
pub const VERSION: &str = "1.10.2";

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest header line (bytes, newline included).
    pub max_header: usize,
    /// Largest `data_length`.
    pub max_data: usize,
    /// Largest `payload_length`.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header: 64 << 10,
            max_data: 1 << 20,
            // A second of 48 kHz stereo 32-bit audio is 384 KB; clients send far smaller chunks.
            max_payload: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the connection closed in the middle of an event")]
    Truncated,
    #[error("malformed event header: {0}")]
    Malformed(String),
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: usize,
    },
}

/// One event as it travels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl Event {
    pub fn new(kind: &str, data: Value) -> Self {
        Self {
            kind: kind.to_string(),
            data: match data {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            payload: Vec::new(),
        }
    }

    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// Reads the next event; `Ok(None)` when the peer closed the connection between events.
pub fn read_event(r: &mut impl BufRead, limits: &Limits) -> Result<Option<Event>, ProtocolError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(limits.max_header as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > limits.max_header {
            return Err(ProtocolError::TooLarge {
                what: "a header line",
                len: line.len() as u64,
                max: limits.max_header,
            });
        }
        return Err(ProtocolError::Truncated);
    }
    let header: Value = serde_json::from_slice(&line)
        .map_err(|e| ProtocolError::Malformed(format!("not JSON ({e})")))?;
    let Value::Object(mut header) = header else {
        return Err(ProtocolError::Malformed("not a JSON object".into()));
    };
    let kind = match header.remove("type") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err(ProtocolError::Malformed("no \"type\" string".into())),
    };
    let mut data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ProtocolError::Malformed("\"data\" is not an object".into())),
    };
    let length = |key: &str, max: usize, what: &'static str| -> Result<usize, ProtocolError> {
        match header.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => {
                let len = v.as_u64().ok_or_else(|| {
                    ProtocolError::Malformed(format!("{key} is not a non-negative integer"))
                })?;
                if len > max as u64 {
                    return Err(ProtocolError::TooLarge { what, len, max });
                }
                Ok(len as usize)
            }
        }
    };
    let data_len = length("data_length", limits.max_data, "data")?;
    let payload_len = length("payload_length", limits.max_payload, "a payload")?;
    if data_len > 0 {
        let bytes = read_exactly(r, data_len)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(extra)) => data.extend(extra),
            _ => {
                return Err(ProtocolError::Malformed(
                    "the data block is not a JSON object".into(),
                ));
            }
        }
    }
    let payload = if payload_len > 0 {
        read_exactly(r, payload_len)?
    } else {
        Vec::new()
    };
    Ok(Some(Event {
        kind,
        data,
        payload,
    }))
}

fn read_exactly(r: &mut impl Read, len: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    Ok(buf)
}

/// Reads events from `bytes` until the end or the first error, converting the audio of each
/// `audio-chunk` as the server does: what the fuzz target and its replay test run.
pub fn read_all(bytes: &[u8]) -> usize {
    let mut r = std::io::Cursor::new(bytes);
    let mut n = 0;
    while let Ok(Some(e)) = read_event(&mut r, &Limits::default()) {
        n += 1;
        let get = |k: &str| e.data.get(k).and_then(Value::as_u64);
        if let (Some(width), Some(channels)) = (get("width"), get("channels"))
            && (1..=16).contains(&channels)
            && let Some(samples) = pcm_to_f32(&e.payload, width as usize)
        {
            let _ = crate::audio::downmix(&samples, channels as usize);
        }
    }
    n
}

/// Writes one event (data as a separate block, as the Python library does) and flushes.
pub fn write_event(w: &mut impl Write, event: &Event) -> std::io::Result<()> {
    let mut header = Map::new();
    header.insert("type".into(), Value::String(event.kind.clone()));
    header.insert("version".into(), Value::String(VERSION.into()));
    let data = if event.data.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&event.data)?
    };
    if !data.is_empty() {
        header.insert("data_length".into(), data.len().into());
    }
    if !event.payload.is_empty() {
        header.insert("payload_length".into(), event.payload.len().into());
    }
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    out.extend_from_slice(&data);
    w.write_all(&out)?;
    w.write_all(&event.payload)?;
    w.flush()
}

/// 16-bit little-endian PCM for a chunk of samples in [-1, 1].
pub fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect()
}

/// Interleaved PCM of `width` bytes per sample (8-bit unsigned, 16/24/32-bit signed little
/// endian, as WAV stores them) to floats in [-1, 1]. Trailing bytes of a partial frame are
/// ignored.
pub fn pcm_to_f32(bytes: &[u8], width: usize) -> Option<Vec<f32>> {
    Some(match width {
        1 => bytes.iter().map(|&b| (b as f32 - 128.0) / 128.0).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect(),
        3 => bytes
            .chunks_exact(3)
            .map(|b| (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0)
            .collect(),
        4 => bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0)
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<Event>, ProtocolError> {
        read_event(&mut std::io::Cursor::new(bytes), &Limits::default())
    }

    #[test]
    fn an_event_round_trips_with_data_and_payload() {
        let e = Event::new(
            "audio-chunk",
            serde_json::json!({"rate": 16000, "width": 2}),
        )
        .with_payload(vec![1, 2, 3, 4]);
        let mut buf = Vec::new();
        write_event(&mut buf, &e).unwrap();
        assert_eq!(read(&buf).unwrap().unwrap(), e);
    }

    #[test]
    fn inline_data_and_a_data_block_are_merged() {
        let block = br#"{"b": 2}"#;
        let mut bytes = format!(
            "{{\"type\":\"x\",\"data\":{{\"a\":1}},\"data_length\":{}}}\n",
            block.len()
        )
        .into_bytes();
        bytes.extend_from_slice(block);
        let e = read(&bytes).unwrap().unwrap();
        assert_eq!(e.data.get("a"), Some(&Value::from(1)));
        assert_eq!(e.data.get("b"), Some(&Value::from(2)));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(read(b"").unwrap().is_none());
        assert!(matches!(
            read(b"garbage\n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(read(b"[1]\n"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(
            read(b"{\"data\":{}}\n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            read(b"{\"type\":\"x\""),
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            read(b"{\"type\":\"x\",\"payload_length\":2000000000}\n"),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            read(b"{\"type\":\"x\",\"payload_length\":10}\nabc"),
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            read(b"{\"type\":\"x\",\"payload_length\":-1}\n"),
            Err(ProtocolError::Malformed(_))
        ));
        let long = vec![b'x'; 70 << 10];
        assert!(matches!(read(&long), Err(ProtocolError::TooLarge { .. })));
    }

    #[test]
    fn read_all_stops_at_the_first_bad_frame() {
        assert_eq!(read_all(b"{\"type\":\"a\"}\n{\"type\":\"b\"}\n"), 2);
        assert_eq!(
            read_all(b"{\"type\":\"a\"}\nnot json\n{\"type\":\"b\"}\n"),
            1
        );
    }

    #[test]
    fn pcm_widths_convert_to_the_same_level() {
        let half16 = 16384i16.to_le_bytes();
        let half32 = (1i32 << 30).to_le_bytes();
        let half24 = [0x00, 0x00, 0x40];
        assert_eq!(pcm_to_f32(&half16, 2).unwrap(), vec![0.5]);
        assert_eq!(pcm_to_f32(&half32, 4).unwrap(), vec![0.5]);
        assert_eq!(pcm_to_f32(&half24, 3).unwrap(), vec![0.5]);
        assert_eq!(pcm_to_f32(&[192], 1).unwrap(), vec![0.5]);
        assert!(pcm_to_f32(&[0; 5], 5).is_none());
    }
}
