//! A bounded reader for the header of GGUF files: metadata key/values and tensor infos.
//!
//! The model importer reads the tokenizer from here, and the audit reads `general.*` keys. It
//! never reads tensor data. Every count and length is checked against the bytes left in the
//! file before anything is allocated, so a malformed or hostile file gives an error, never a
//! panic or an allocation the size of a lie (a fuzz target exercises exactly this).

use std::collections::BTreeMap;
use std::path::Path;

use super::ModelError;

const MAGIC: &[u8; 4] = b"GGUF";

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Value::U8(v) => v as u64,
            Value::U16(v) => v as u64,
            Value::U32(v) => v as u64,
            Value::U64(v) => v,
            Value::I8(v) if v >= 0 => v as u64,
            Value::I16(v) if v >= 0 => v as u64,
            Value::I32(v) if v >= 0 => v as u64,
            Value::I64(v) if v >= 0 => v as u64,
            _ => return None,
        })
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self
                .as_u64()
                .map(|v| v as f64)
                .or_else(|| self.as_i64().map(|v| v as f64)),
        }
    }

    fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::I8(v) => v as i64,
            Value::I16(v) => v as i64,
            Value::I32(v) => v as i64,
            Value::I64(v) => v,
            _ => return None,
        })
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

/// The parsed header of a GGUF file.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Where tensor data starts in the file (tensor offsets are relative to it).
    pub data_start: u64,
    /// Where the tensor infos start: the metadata is the bytes from 24 up to here.
    pub infos_start: u64,
}

impl Header {
    /// Reads the header of the GGUF file at `path`. Only the header is read from disk.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        // Headers of real models are a few MB (the vocabulary); read up to 64 MiB.
        let mut bytes = Vec::new();
        file.take(64 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| ModelError::io(path, e))?;
        Self::parse(&bytes, file_len).map_err(|reason| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a header from the first bytes of a file of `file_len` bytes. Tensor data must
    /// lie inside the file.
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Self, String> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a GGUF file (no GGUF magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // Each key/value takes at least 12 bytes, each tensor info at least 24.
        r.check_count(n_kv, 12, "metadata entries")?;
        r.check_count(n_tensors, 24, "tensor infos")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let infos_start = r.pos as u64;
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 8 {
                return Err(format!("tensor {name}: {n_dims} dimensions"));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64())
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32)
            .max(1);
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            if data_start.saturating_add(t.offset) > file_len {
                return Err(format!(
                    "truncated: tensor {} starts at byte {} of a {file_len}-byte file",
                    t.name,
                    data_start.saturating_add(t.offset)
                ));
            }
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            data_start,
            infos_start,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// A string array such as `tokenizer.ggml.tokens`.
    pub fn get_strings(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "truncated header: needs {n} bytes at offset {}, {} left",
                self.pos,
                self.left()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<(), String> {
        if count.saturating_mul(min_size) > self.left() as u64 {
            return Err(format!(
                "header claims {count} {what}, more than the file can hold"
            ));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        if n > self.left() as u64 {
            return Err(format!(
                "string of {n} bytes at offset {} overruns the header",
                self.pos
            ));
        }
        let raw = self.take(n as usize)?;
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".into());
                }
                let elem_ty = self.u32()?;
                let n = self.u64()?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(format!("unknown array element type {other}")),
                };
                self.check_count(n, min_size, "array elements")?;
                let mut out = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    out.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(out)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_str(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    fn tiny() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        push_str(&mut b, "general.license");
        b.extend(8u32.to_le_bytes());
        push_str(&mut b, "apache-2.0");
        push_str(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        push_str(&mut b, "a");
        push_str(&mut b, "b");
        b
    }

    #[test]
    fn reads_metadata() {
        let b = tiny();
        let h = Header::parse(&b, b.len() as u64).unwrap();
        assert_eq!(h.get_str("general.license"), Some("apache-2.0"));
        assert_eq!(h.get_strings("tokenizer.ggml.tokens"), Some(vec!["a", "b"]));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = tiny();
        for n in 0..b.len() {
            assert!(Header::parse(&b[..n], n as u64).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn lying_counts_do_not_allocate() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        let e = Header::parse(&b, b.len() as u64).unwrap_err();
        assert!(e.contains("more than the file can hold"), "{e}");
    }
}
