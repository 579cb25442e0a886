//! A reader for the metadata header of a GGUF file.
//!
//! The importer needs a model's architecture, size and quantisation to fill the store's config
//! blob (what `ollama show` and `/api/tags` report) without linking llama.cpp, so this reads the
//! key/value section of the header and stops before the tensor data. Arrays (the tokenizer's
//! 262k-entry vocabulary) are skipped, only their length is kept.

use std::collections::BTreeMap;
use std::io::{self, Read};

/// A GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading failed.
    #[error("reading the GGUF header: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file (the first four bytes are not \"GGUF\")")]
    BadMagic,
    /// A GGUF version this reader does not know.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    Version(u32),
    /// A value type id outside the GGUF specification.
    #[error("corrupt GGUF header: unknown value type {0} for key {1:?}")]
    BadType(u32, String),
    /// A length field that cannot be right (guards against allocating gigabytes on bad input).
    #[error("corrupt GGUF header: implausible length {0}")]
    BadLength(u64),
}

/// One metadata value. Arrays keep only their element count: nothing we report needs more.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array { len: u64 },
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file, keyed by name (`general.architecture`, ...).
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub version: u32,
    pub tensor_count: u64,
    pub kv: BTreeMap<String, Value>,
}

/// The longest string we accept in a header: chat templates run to a few tens of kilobytes.
const MAX_STRING: u64 = 16 * 1024 * 1024;

impl Metadata {
    /// Read the header from `r` (positioned at the start of the file).
    pub fn read(r: &mut impl Read) -> Result<Self, GgufError> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic);
        }
        let version = read_u32(r)?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let tensor_count = read_u64(r)?;
        let kv_count = read_u64(r)?;
        if kv_count > 1_000_000 {
            return Err(GgufError::BadLength(kv_count));
        }
        let mut kv = BTreeMap::new();
        for _ in 0..kv_count {
            let key = read_string(r)?;
            let ty = read_u32(r)?;
            let value = read_value(r, ty, &key)?;
            kv.insert(key, value);
        }
        Ok(Metadata { version, tensor_count, kv })
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.kv.get(key).and_then(Value::as_u64)
    }

    /// `general.architecture`, e.g. `gemma3`, `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The model's own chat template (Jinja), when the GGUF carries one.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// Quantisation as Ollama names it (`Q4_K_M`), from `general.file_type`.
    pub fn quantization(&self) -> Option<&'static str> {
        self.get_u64("general.file_type").and_then(file_type_name)
    }

    /// Context length the model was trained for (`<arch>.context_length`).
    pub fn context_length(&self) -> Option<u64> {
        self.get_u64(&format!("{}.context_length", self.architecture()?))
    }

    /// Embedding width (`<arch>.embedding_length`).
    pub fn embedding_length(&self) -> Option<u64> {
        self.get_u64(&format!("{}.embedding_length", self.architecture()?))
    }
}

/// llama.cpp's `llama_ftype` numbers, as Ollama prints them.
pub fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}
fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}
fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> Result<String, GgufError> {
    let len = read_u64(r)?;
    if len > MAX_STRING {
        return Err(GgufError::BadLength(len));
    }
    // Grow with what actually arrives: a header that declares 16 MiB and ends after ten bytes
    // costs ten bytes, not a 16 MiB allocation.
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "GGUF header ends early").into());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "GGUF header ends early"));
    }
    Ok(())
}

fn read_value(r: &mut impl Read, ty: u32, key: &str) -> Result<Value, GgufError> {
    Ok(match ty {
        0 => Value::Uint(read_u8(r)?.into()),
        1 => Value::Int((read_u8(r)? as i8).into()),
        2 => Value::Uint(read_u16(r)?.into()),
        3 => Value::Int((read_u16(r)? as i16).into()),
        4 => Value::Uint(read_u32(r)?.into()),
        5 => Value::Int((read_u32(r)? as i32).into()),
        6 => Value::Float(f32::from_bits(read_u32(r)?).into()),
        7 => Value::Bool(read_u8(r)? != 0),
        8 => Value::Str(read_string(r)?),
        9 => {
            let elem = read_u32(r)?;
            let len = read_u64(r)?;
            if len > 100_000_000 {
                return Err(GgufError::BadLength(len));
            }
            match elem_size(elem) {
                Some(size) => skip(r, size * len)?,
                None if elem == 8 => {
                    for _ in 0..len {
                        let n = read_u64(r)?;
                        if n > MAX_STRING {
                            return Err(GgufError::BadLength(n));
                        }
                        skip(r, n)?;
                    }
                }
                None => return Err(GgufError::BadType(elem, key.to_owned())),
            }
            Value::Array { len }
        }
        10 => Value::Uint(read_u64(r)?),
        11 => Value::Int(read_u64(r)? as i64),
        12 => Value::Float(f64::from_bits(read_u64(r)?)),
        other => return Err(GgufError::BadType(other, key.to_owned())),
    })
}

fn elem_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Build a small GGUF header in memory, so the reader is tested without a model file.
    pub(crate) fn header(kvs: &[(&str, Value)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            out.extend((k.len() as u64).to_le_bytes());
            out.extend(k.as_bytes());
            match v {
                Value::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    out.extend((s.len() as u64).to_le_bytes());
                    out.extend(s.as_bytes());
                }
                Value::Uint(n) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend((*n as u32).to_le_bytes());
                }
                Value::Array { len } => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend(len.to_le_bytes());
                    for i in 0..*len {
                        let s = format!("tok{i}");
                        out.extend((s.len() as u64).to_le_bytes());
                        out.extend(s.as_bytes());
                    }
                }
                _ => unreachable!("test helper covers str, u32 and string arrays"),
            }
        }
        out
    }

    #[test]
    fn reads_scalars_and_skips_arrays() {
        let bytes = header(&[
            ("general.architecture", Value::Str("gemma3".into())),
            ("general.file_type", Value::Uint(15)),
            ("tokenizer.ggml.tokens", Value::Array { len: 3 }),
            ("gemma3.context_length", Value::Uint(32768)),
        ]);
        let md = Metadata::read(&mut bytes.as_slice()).expect("header parses");
        assert_eq!(md.architecture(), Some("gemma3"));
        assert_eq!(md.quantization(), Some("Q4_K_M"));
        assert_eq!(md.context_length(), Some(32768));
        assert_eq!(md.kv.get("tokenizer.ggml.tokens"), Some(&Value::Array { len: 3 }));
        assert_eq!(md.chat_template(), None);
    }

    #[test]
    fn rejects_non_gguf_and_truncation() {
        assert!(matches!(Metadata::read(&mut &b"GGML\x03\0\0\0"[..]), Err(GgufError::BadMagic)));
        let bytes = header(&[("general.architecture", Value::Str("gemma3".into()))]);
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(Metadata::read(&mut &cut[..]), Err(GgufError::Io(_))));
    }

    #[test]
    fn rejects_absurd_lengths() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        assert!(matches!(Metadata::read(&mut bytes.as_slice()), Err(GgufError::BadLength(_))));
    }
}
