//! PyTorch checkpoints (`torch.save`'s zip layout) read without Python: the pickled object
//! graph is evaluated by a small pickle machine that knows only what `torch.save` writes
//! (protocol 2: dicts, lists, tuples, strings, numbers, `OrderedDict`, and tensors rebuilt from
//! storages by `torch._utils._rebuild_tensor_v2`). Nothing in the file is ever executed: a
//! global other than those is an error naming it.
//!
//! Used for Whisper checkpoints in OpenAI's format (`{"dims": {...}, "model_state_dict": {...}}`),
//! the format AI2's OLMoASR is published in.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::ModelError;
use super::ct2::DType;

/// A value of the pickled object graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Keys in insertion order.
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// A tensor: its storage key, element type, offset, shape and strides (in elements).
    Tensor(TensorRef),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: String,
    pub dtype: DType,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A loaded checkpoint: the object graph and the raw storages by key.
pub struct Checkpoint {
    pub path: PathBuf,
    pub root: Value,
    storages: HashMap<String, Vec<u8>>,
}

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
            bad(format!(
                "not a PyTorch checkpoint (torch.save's zip layout): {e}"
            ))
        })?;
        let names: Vec<String> = zip
            .file_names()
            .map(|n| n.map(|n| n.into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("unreadable zip directory: {e}")))?;
        let pkl = names
            .iter()
            .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
            .cloned()
            .ok_or_else(|| bad("no data.pkl inside: not a torch.save checkpoint".into()))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let mut pickle = Vec::new();
        zip.by_name(&pkl)
            .and_then(|mut f| f.read_to_end(&mut pickle).map_err(Into::into))
            .map_err(|e| bad(format!("{pkl}: {e}")))?;
        let root = unpickle(&pickle).map_err(|e| bad(format!("{pkl}: {e}")))?;
        let mut storages = HashMap::new();
        for name in &names {
            let Some(key) = name.strip_prefix(&format!("{prefix}data/")) else {
                continue;
            };
            let mut bytes = Vec::new();
            zip.by_name(name)
                .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
                .map_err(|e| bad(format!("{name}: {e}")))?;
            storages.insert(key.to_string(), bytes);
        }
        Ok(Self {
            path: path.to_path_buf(),
            root,
            storages,
        })
    }

    /// The bytes of a contiguous tensor, checked against its storage.
    pub fn tensor_bytes(&self, name: &str, t: &TensorRef) -> Result<&[u8], ModelError> {
        let bad = |reason: String| ModelError::Format {
            path: self.path.clone(),
            reason: format!("tensor {name}: {reason}"),
        };
        let mut expect = 1;
        for (dim, stride) in t.shape.iter().zip(&t.stride).rev() {
            if *dim > 1 && *stride != expect {
                return Err(bad("not contiguous; re-save it with .contiguous()".into()));
            }
            expect *= dim;
        }
        let storage = self
            .storages
            .get(&t.storage)
            .ok_or_else(|| bad(format!("storage {} is missing", t.storage)))?;
        let size = t.dtype.size_bytes();
        let n: usize = t.shape.iter().product();
        let start = t.offset.saturating_mul(size);
        let len = n.saturating_mul(size);
        storage
            .get(start..start.saturating_add(len))
            .ok_or_else(|| bad(format!("{n} elements at {} overrun its storage", t.offset)))
    }
}

/// Evaluates a pickle (protocols 2–4, the opcodes `torch.save` emits).
pub fn unpickle(data: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = i.checked_add(n).ok_or("length overflows")?;
        let s = data
            .get(*i..end)
            .ok_or_else(|| format!("truncated at byte {}", *i))?;
        *i += n;
        Ok(s)
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or("stack underflow".to_string());
    let since_mark =
        |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>, String> {
            let m = marks.pop().ok_or("no mark")?;
            if m > stack.len() {
                return Err("mark beyond the stack".into());
            }
            Ok(stack.split_off(m))
        };
    loop {
        let op = *data.get(i).ok_or("no STOP opcode")?;
        i += 1;
        match op {
            0x80 => {
                take(&mut i, 1)?; // PROTO
            }
            0x95 => {
                take(&mut i, 8)?; // FRAME
            }
            b'.' => return pop(&mut stack),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'(' => marks.push(stack.len()),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(take(&mut i, 1)?[0] as i64)),
            b'M' => {
                let b = take(&mut i, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
            }
            b'J' => {
                let b = take(&mut i, 4)?;
                stack.push(Value::Int(i32::from_le_bytes(b.try_into().unwrap()) as i64))
            }
            0x8a => {
                // LONG1: little-endian two's complement.
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    return Err("integer wider than 64 bits".into());
                }
                let mut v: i64 = 0;
                for (k, byte) in b.iter().enumerate() {
                    v |= (*byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v))
            }
            b'G' => {
                let b = take(&mut i, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap())))
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as usize,
                    0x8c => take(&mut i, 1)?[0] as usize,
                    _ => u64::from_le_bytes(take(&mut i, 8)?.try_into().unwrap()) as usize,
                };
                let s = std::str::from_utf8(take(&mut i, n)?).map_err(|e| e.to_string())?;
                stack.push(Value::Str(s.to_string()))
            }
            b'c' => {
                // GLOBAL "module\nname\n"
                let line = |i: &mut usize| -> Result<String, String> {
                    let end = data[*i..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or("unterminated GLOBAL")?;
                    let s = String::from_utf8_lossy(&data[*i..*i + end]).into_owned();
                    *i += end + 1;
                    Ok(s)
                };
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                stack.push(Value::Global(module, name))
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err("STACK_GLOBAL of non-strings".into()),
                }
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                memo.insert(k, stack.last().cloned().ok_or("memo of empty stack")?);
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                memo.insert(k, stack.last().cloned().ok_or("memo of empty stack")?);
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, stack.last().cloned().ok_or("memo of empty stack")?);
            }
            b'h' => {
                let k = take(&mut i, 1)?[0] as u32;
                stack.push(memo.get(&k).cloned().ok_or("unknown memo key")?)
            }
            b'j' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                stack.push(memo.get(&k).cloned().ok_or("unknown memo key")?)
            }
            b't' => {
                let items = since_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items))
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    since_mark(&mut stack, &mut marks)?
                };
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err("APPEND to a non-list".into()),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    since_mark(&mut stack, &mut marks)?
                };
                if items.len() % 2 != 0 {
                    return Err("odd number of items for a dict".into());
                }
                let Some(Value::Dict(d)) = stack.last_mut() else {
                    return Err("SETITEM on a non-dict".into());
                };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'Q' => {
                // BINPERSID: torch's ("storage", StorageType, key, location, numel).
                let pid = pop(&mut stack)?;
                stack.push(persistent(pid)?)
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let func = pop(&mut stack)?;
                stack.push(reduce(func, args)?)
            }
            b'b' => {
                // BUILD: state on an object; the state torch writes is ignorable here.
                pop(&mut stack)?;
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    i - 1
                ));
            }
        }
    }
}

/// What a persistent id stands for: a storage, as (key, element type).
fn persistent(pid: Value) -> Result<Value, String> {
    let Value::Tuple(t) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match t.as_slice() {
        [Value::Str(kind), Value::Global(_, ty), Value::Str(key), ..] if kind == "storage" => {
            let dtype = match ty.as_str() {
                "HalfStorage" => DType::F16,
                "FloatStorage" => DType::F32,
                other => {
                    return Err(format!(
                        "{other}: only float16 and float32 tensors can be read"
                    ));
                }
            };
            Ok(Value::Tensor(TensorRef {
                storage: key.clone(),
                dtype,
                offset: 0,
                shape: Vec::new(),
                stride: Vec::new(),
            }))
        }
        _ => Err("persistent id is not a torch storage".into()),
    }
}

fn ints(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| {
                x.as_int()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or("non-integer in a shape".to_string())
            })
            .collect(),
        _ => Err("shape is not a tuple".into()),
    }
}

/// The calls `torch.save` pickles: tensors rebuilt from storages, ordered dicts. Nothing else
/// is allowed.
fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &func else {
        return Err("REDUCE of a non-global".into());
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let [Value::Tensor(storage), offset, shape, stride, ..] = args.as_slice() else {
                return Err("_rebuild_tensor_v2 with unexpected arguments".into());
            };
            Ok(Value::Tensor(TensorRef {
                offset: offset.as_int().ok_or("tensor offset")? as usize,
                shape: ints(shape)?,
                stride: ints(stride)?,
                ..storage.clone()
            }))
        }
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch", "device") => Ok(Value::None),
        _ => Err(format!(
            "the checkpoint calls {module}.{name}, which sotto does not run (only tensors and \
             plain containers are read)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What torch.save writes for `{"dims": {"n_mels": 80}, "w": tensor}`, by hand.
    fn sample() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'('];
        let s = |p: &mut Vec<u8>, t: &str| {
            p.push(b'X');
            p.extend((t.len() as u32).to_le_bytes());
            p.extend(t.as_bytes());
        };
        s(&mut p, "dims");
        p.extend([b'}', b'(']);
        s(&mut p, "n_mels");
        p.extend([b'K', 80, b'u']);
        s(&mut p, "w");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        s(&mut p, "storage");
        p.extend(b"ctorch\nHalfStorage\n");
        s(&mut p, "0");
        s(&mut p, "cpu");
        p.extend([
            b'K', 6, b't', b'Q', b'K', 0, b'K', 2, b'K', 3, 0x86, b'K', 3, b'K', 1, 0x86,
        ]);
        p.extend([0x89, b')', b't', b'R', b'u', b'.']);
        p
    }

    #[test]
    fn a_torch_pickle_gives_its_dims_and_tensors() {
        let v = unpickle(&sample()).unwrap();
        assert_eq!(v.get("dims").unwrap().get("n_mels"), Some(&Value::Int(80)));
        let Some(Value::Tensor(t)) = v.get("w") else {
            panic!("{v:?}")
        };
        assert_eq!(
            (t.dtype, t.shape.clone(), t.stride.clone()),
            (DType::F16, vec![2, 3], vec![3, 1])
        );
    }

    #[test]
    fn code_in_a_pickle_is_refused_by_name() {
        let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let e = unpickle(evil).unwrap_err();
        assert!(e.contains("os.system"), "{e}");
    }

    #[test]
    fn mutated_pickles_are_errors_or_values_never_panics() {
        let base = sample();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % b.len();
                b[i] = (seed >> 40) as u8;
            }
            let cut = (seed as usize >> 8) % (b.len() + 1);
            let _ = unpickle(&b[..cut]);
        }
    }
}
