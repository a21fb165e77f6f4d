//! Reader for CTranslate2 `model.bin` checkpoints (the faster-whisper format).
//!
//! Layout, all little-endian: u32 binary version, string spec name, u32 spec revision, u32
//! variable count, then per variable: string name, u8 rank, u32 dims…, u8 dtype, u32 byte count,
//! raw bytes; then u32 alias count and (alias, target) string pairs. A string is a u16 length that
//! includes a trailing NUL, then the bytes.
//!
//! Every length read from the file is checked against what is left of it before anything is
//! allocated, so a truncated or hostile file is an error, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ModelError;

/// Element type of a CTranslate2 variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    pub fn size_bytes(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named variable; `data` borrows the file's bytes.
#[derive(Clone, Debug)]
pub struct Variable<'a> {
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    /// A scalar integer attribute such as `encoder/num_heads`.
    pub fn as_int(&self) -> Option<i64> {
        if !self.dims.is_empty() {
            return None;
        }
        Some(match (self.dtype, self.data) {
            (DType::I8, [a]) => *a as i8 as i64,
            (DType::I16, [a, b]) => i16::from_le_bytes([*a, *b]) as i64,
            (DType::I32, [a, b, c, d]) => i32::from_le_bytes([*a, *b, *c, *d]) as i64,
            _ => return None,
        })
    }
}

/// A parsed checkpoint: spec name and variables by name (aliases resolved).
#[derive(Debug)]
pub struct Checkpoint<'a> {
    pub path: PathBuf,
    pub spec: String,
    pub variables: BTreeMap<String, Variable<'a>>,
}

impl<'a> Checkpoint<'a> {
    pub fn parse(path: &Path, bytes: &'a [u8]) -> Result<Self, ModelError> {
        let mut r = Cursor {
            path,
            bytes,
            pos: 0,
        };
        let version = r.u32()?;
        if !(1..=6).contains(&version) {
            return Err(r.bad(format!(
                "not a CTranslate2 model.bin (binary version {version}, expected 1 to 6)"
            )));
        }
        let spec = r.string()?;
        let _revision = r.u32()?;
        let count = r.u32()? as usize;
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = r.string()?;
            let rank = r.u8()? as usize;
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                dims.push(r.u32()? as usize);
            }
            let code = r.u8()?;
            let dtype = DType::from_code(code)
                .ok_or_else(|| r.bad(format!("variable {name}: unknown dtype code {code}")))?;
            let n_bytes = r.u32()? as usize;
            let elems: usize = dims.iter().product();
            if elems.checked_mul(dtype.size_bytes()) != Some(n_bytes) {
                return Err(r.bad(format!(
                    "variable {name}: {n_bytes} bytes do not fit shape {dims:?} of {dtype:?}"
                )));
            }
            let data = r.take(n_bytes)?;
            variables.insert(name, Variable { dims, dtype, data });
        }
        let aliases = r.u32()? as usize;
        for _ in 0..aliases {
            let alias = r.string()?;
            let target = r.string()?;
            let var = variables
                .get(&target)
                .cloned()
                .ok_or_else(|| r.bad(format!("alias {alias} points at missing {target}")))?;
            variables.insert(alias, var);
        }
        if r.pos != bytes.len() {
            return Err(r.bad(format!(
                "{} unexpected bytes after the last alias",
                bytes.len() - r.pos
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            spec,
            variables,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Variable<'a>, ModelError> {
        self.variables.get(name).ok_or_else(|| ModelError::Format {
            path: self.path.clone(),
            reason: format!("checkpoint has no variable {name}"),
        })
    }
}

struct Cursor<'p, 'a> {
    path: &'p Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'_, 'a> {
    fn bad(&self, reason: String) -> ModelError {
        ModelError::Format {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.bad(format!(
                "truncated: needs {n} bytes at offset {}, file has {}",
                self.pos,
                self.bytes.len()
            )));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ModelError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.u16()? as usize;
        let raw = self.take(n)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| self.bad("a name is not UTF-8".into()))
    }
}
