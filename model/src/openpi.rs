//! openpi's policy wire format: msgpack with numpy arrays as maps (openpi-client's
//! `msgpack_numpy.py`), shared by `lapa serve` and the edge runtime's remote policy.
//!
//! An array travels as a map whose keys are msgpack *binary* strings: `__ndarray__: true`,
//! `data: <bin>` (the array's bytes, C order), `dtype: "<f4" | "|u1" | …` (numpy's
//! `dtype.str`), `shape: [..]`. Scalars of numpy type travel as `__npgeneric__`. Decoding also
//! accepts str keys. The decoder works on a byte slice and checks every length against what is
//! left before allocating, so a hostile length prefix cannot make it reserve memory; nesting is
//! capped.

use std::collections::BTreeMap;

/// Where the observation's parts are in a request (the server's metadata names them under
/// `observation_keys`; these are openpi's LIBERO-style defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationKeys {
    pub image: String,
    pub state: String,
    pub prompt: String,
}

impl Default for ObservationKeys {
    fn default() -> Self {
        Self { image: "observation/image".into(), state: "observation/state".into(), prompt: "prompt".into() }
    }
}

/// A decoded msgpack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    /// Unsigned values above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    /// Keys as given (str or bin); see [`Value::get`].
    Map(Vec<(Value, Value)>),
    /// A numpy array.
    NdArray(NdArray),
}

/// A numpy array: element type, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// numpy's `dtype.str`, e.g. `<f4`, `|u1`.
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Deepest nesting the decoder accepts.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("msgpack at byte {at}: {message}")]
pub struct DecodeError {
    pub at: usize,
    pub message: String,
}

impl Value {
    /// The value under key `k` of a map (str or bin key).
    pub fn get(&self, k: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|(key, _)| key.key_str() == Some(k)).map(|(_, v)| v),
            _ => None,
        }
    }

    fn key_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bin(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bin(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::NdArray(_) => "ndarray",
        }
    }
}

impl NdArray {
    /// Bytes per element of the dtype, or an error naming it.
    pub fn item_size(dtype: &str) -> Result<usize, String> {
        let kind = dtype.get(1..2).unwrap_or("");
        let n: usize = dtype.get(2..).and_then(|s| s.parse().ok()).ok_or_else(|| format!("dtype {dtype:?} is not a numpy dtype string"))?;
        let endian_ok = matches!(dtype.get(..1), Some("<" | "|" | "="));
        if !endian_ok || !matches!(kind, "f" | "i" | "u" | "b") || !matches!(n, 1 | 2 | 4 | 8) {
            return Err(format!("dtype {dtype:?}: only little-endian bool, integer and float arrays are supported"));
        }
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32 (from any supported dtype).
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        let n = Self::item_size(&self.dtype)?;
        let kind = &self.dtype[1..2];
        let d = &self.data;
        let v = match (kind, n) {
            ("f", 4) => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            ("f", 8) => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            ("f", 2) => return Err("float16 arrays are not supported; send float32".into()),
            ("u" | "b", 1) => d.iter().map(|&b| f32::from(b)).collect(),
            ("i", 1) => d.iter().map(|&b| f32::from(b as i8)).collect(),
            ("u", 2) => d.chunks_exact(2).map(|c| f32::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
            ("i", 2) => d.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]]))).collect(),
            ("u", 4) => d.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
            ("i", 4) => d.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
            ("u", 8) => d.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            ("i", 8) => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            _ => return Err(format!("dtype {:?} is not supported", self.dtype)),
        };
        Ok(v)
    }

    /// A float32 array.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self { dtype: "<f4".into(), shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, m: impl Into<String>) -> DecodeError {
        DecodeError { at: self.at, message: m.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| self.err(format!("{n} bytes announced, {} left", self.b.len() - self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }

    /// A container of `n` items, each at least one byte: refuse counts the input cannot hold.
    fn count(&self, n: u64, per: usize) -> Result<usize, DecodeError> {
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(per as u64) > left {
            return Err(self.err(format!("{n} items announced, only {left} bytes left")));
        }
        Ok(n as usize)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        let t = self.u8()?;
        Ok(match t {
            0x00..=0x7f => Value::Int(i64::from(t)),
            0xe0..=0xff => Value::Int(i64::from(t as i8)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xa0..=0xbf => self.str(usize::from(t & 0x1f))?,
            0xd9 => {
                let n = self.be(1)? as usize;
                self.str(n)?
            }
            0xda => {
                let n = self.be(2)? as usize;
                self.str(n)?
            }
            0xdb => {
                let n = self.be(4)? as usize;
                self.str(n)?
            }
            0xc4..=0xc6 => {
                let n = self.be(1 << (t - 0xc4))? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            0x90..=0x9f => self.array(u64::from(t & 0x0f), depth)?,
            0xdc => {
                let n = self.be(2)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.be(4)?;
                self.array(n, depth)?
            }
            0x80..=0x8f => self.map(u64::from(t & 0x0f), depth)?,
            0xde => {
                let n = self.be(2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.be(4)?;
                self.map(n, depth)?
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xcc => Value::Int(self.be(1)? as i64),
            0xcd => Value::Int(self.be(2)? as i64),
            0xce => Value::Int(self.be(4)? as i64),
            0xcf => {
                let v = self.be(8)?;
                i64::try_from(v).map_or(Value::UInt(v), Value::Int)
            }
            0xd0 => Value::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xc1 => return Err(self.err("0xc1 is not a msgpack type")),
            _ => return Err(self.err(format!("msgpack extension type 0x{t:02x} is not supported"))),
        })
    }

    fn str(&mut self, n: usize) -> Result<Value, DecodeError> {
        let at = self.at;
        let s = self.take(n)?;
        std::str::from_utf8(s).map(|s| Value::Str(s.to_string())).map_err(|_| DecodeError { at, message: "string is not UTF-8".into() })
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<Value, DecodeError> {
        let n = self.count(n, 1)?;
        // Reserve for a few items only: a value takes ~80 bytes in memory and as little as 1 on
        // the wire, so reserving `n` would let a small message claim 80× its size.
        let mut v = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(v))
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<Value, DecodeError> {
        let at = self.at;
        let n = self.count(n, 2)?;
        let mut v = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let val = self.value(depth + 1)?;
            v.push((k, val));
        }
        let map = Value::Map(v);
        if map.get("__ndarray__").is_some() {
            return ndarray(&map).map(Value::NdArray).map_err(|m| DecodeError { at, message: m });
        }
        if let Some(v) = map.get("__npgeneric__").and(map.get("data")) {
            return Ok(v.clone());
        }
        Ok(map)
    }
}

fn ndarray(m: &Value) -> Result<NdArray, String> {
    let dtype = m.get("dtype").and_then(Value::as_str).ok_or("ndarray without a dtype string")?.to_string();
    let size = NdArray::item_size(&dtype)?;
    let shape = match m.get("shape") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| match d {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format!("ndarray shape holds a {}", other.kind())),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        _ => return Err("ndarray without a shape array".into()),
    };
    let data = match m.get("data") {
        Some(Value::Bin(b)) => b.clone(),
        _ => return Err("ndarray without data bytes".into()),
    };
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(size)).ok_or("ndarray shape overflows")?;
    if n != data.len() {
        return Err(format!("ndarray of shape {shape:?} and dtype {dtype} needs {n} bytes, has {}", data.len()));
    }
    Ok(NdArray { dtype, shape, data })
}

/// Decodes one message (trailing bytes are an error).
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { b: bytes, at: 0 };
    let v = r.value(0)?;
    if r.at != bytes.len() {
        return Err(r.err(format!("{} bytes after the message", bytes.len() - r.at)));
    }
    Ok(v)
}

/// Encodes a value; arrays as openpi-client's `pack_array` does (binary keys).
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    fn len(out: &mut Vec<u8>, n: usize, fix: u8, fix_max: usize, t16: u8) {
        if n <= fix_max {
            out.push(fix | n as u8);
        } else if n <= 0xffff {
            out.push(t16);
            out.extend((n as u16).to_be_bytes());
        } else {
            out.push(t16 + 1);
            out.extend((n as u32).to_be_bytes());
        }
    }
    match v {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        // The smallest form, as msgpack-python packs integers.
        Value::Int(i) => {
            let i = *i;
            if (0..=0x7f).contains(&i) {
                out.push(i as u8);
            } else if (-32..0).contains(&i) {
                out.push(i as i8 as u8);
            } else if (0..=0xff).contains(&i) {
                out.extend([0xcc, i as u8]);
            } else if (0..=0xffff).contains(&i) {
                out.push(0xcd);
                out.extend((i as u16).to_be_bytes());
            } else if (0..=0xffff_ffff).contains(&i) {
                out.push(0xce);
                out.extend((i as u32).to_be_bytes());
            } else if i > 0 {
                out.push(0xcf);
                out.extend((i as u64).to_be_bytes());
            } else if i >= -0x80 {
                out.extend([0xd0, i as i8 as u8]);
            } else if i >= -0x8000 {
                out.push(0xd1);
                out.extend((i as i16).to_be_bytes());
            } else if i >= -0x8000_0000 {
                out.push(0xd2);
                out.extend((i as i32).to_be_bytes());
            } else {
                out.push(0xd3);
                out.extend(i.to_be_bytes());
            }
        }
        Value::UInt(u) => {
            out.push(0xcf);
            out.extend(u.to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend(f.to_be_bytes());
        }
        Value::Str(s) => {
            if s.len() <= 31 {
                out.push(0xa0 | s.len() as u8);
            } else if s.len() <= 0xff {
                out.push(0xd9);
                out.push(s.len() as u8);
            } else {
                len(out, s.len(), 0, 0, 0xda);
            }
            out.extend(s.as_bytes());
        }
        Value::Bin(b) => {
            if b.len() <= 0xff {
                out.push(0xc4);
                out.push(b.len() as u8);
            } else if b.len() <= 0xffff {
                out.push(0xc5);
                out.extend((b.len() as u16).to_be_bytes());
            } else {
                out.push(0xc6);
                out.extend((b.len() as u32).to_be_bytes());
            }
            out.extend(b);
        }
        Value::Array(a) => {
            len(out, a.len(), 0x90, 15, 0xdc);
            a.iter().for_each(|x| encode(x, out));
        }
        Value::Map(m) => {
            len(out, m.len(), 0x80, 15, 0xde);
            for (k, x) in m {
                encode(k, out);
                encode(x, out);
            }
        }
        Value::NdArray(a) => {
            let bin = |s: &str| Value::Bin(s.as_bytes().to_vec());
            let m = Value::Map(vec![
                (bin("__ndarray__"), Value::Bool(true)),
                (bin("data"), Value::Bin(a.data.clone())),
                (bin("dtype"), Value::Str(a.dtype.clone())),
                (bin("shape"), Value::Array(a.shape.iter().map(|&d| Value::Int(d as i64)).collect())),
            ]);
            encode(&m, out);
        }
    }
}

/// A map with string keys, in order.
pub fn map(entries: BTreeMap<&str, Value>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::Str(k.to_string()), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_of_an_openpi_array_decode_and_encode_back() {
        // msgpack_numpy.packb({"a": np.array([1.5, -2], dtype="<f4")}) from openpi-client 0.1.2.
        let golden: Vec<u8> = [
            &[0x81, 0xa1, b'a', 0x84, 0xc4, 0x0b][..],
            b"__ndarray__",
            &[0xc3, 0xc4, 0x04],
            b"data",
            &[0xc4, 0x08, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0xc4, 0x05],
            b"dtype",
            &[0xa3],
            b"<f4",
            &[0xc4, 0x05],
            b"shape",
            &[0x91, 0x02],
        ]
        .concat();
        let v = decode(&golden).expect("decode");
        let Some(Value::NdArray(a)) = v.get("a") else { panic!("{v:?}") };
        assert_eq!(a.shape, vec![2]);
        assert_eq!(a.to_f32().expect("f32"), vec![1.5, -2.0]);
        let mut out = Vec::new();
        encode(&v, &mut out);
        assert_eq!(out, golden);
    }

    #[test]
    fn hostile_input_is_refused_without_allocating() {
        // bin32 announcing 4 GiB in a 6-byte message.
        assert!(decode(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]).is_err_and(|e| e.message.contains("announced")));
        // array32 of 2^32-1 items.
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // map32 likewise.
        assert!(decode(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0]).is_err());
        // Deep nesting.
        assert!(decode(&[0x91; 100]).is_err_and(|e| e.message.contains("nested")));
        // Trailing bytes, invalid UTF-8, reserved byte.
        assert!(decode(&[0xc0, 0xc0]).is_err_and(|e| e.message.contains("after")));
        assert!(decode(&[0xa1, 0xff]).is_err_and(|e| e.message.contains("UTF-8")));
        assert!(decode(&[0xc1]).is_err());
        // An ndarray whose data does not fit its shape.
        let bad = Value::NdArray(NdArray { dtype: "<f4".into(), shape: vec![3], data: vec![0; 8] });
        let mut out = Vec::new();
        encode(&bad, &mut out);
        assert!(decode(&out).is_err_and(|e| e.message.contains("needs 12 bytes, has 8")));
        let odd = Value::NdArray(NdArray { dtype: ">f4".into(), shape: vec![1], data: vec![0; 4] });
        out.clear();
        encode(&odd, &mut out);
        assert!(decode(&out).is_err_and(|e| e.message.contains("little-endian")));
        // Integers take msgpack-python's smallest forms: msgpack.packb([128, 224, -33, 70000,
        // 2**40, -2**40, 300, -200]) from msgpack 1.2.4.
        let ints = Value::Array([128i64, 224, -33, 70_000, 1 << 40, -(1 << 40), 300, -200].map(Value::Int).to_vec());
        out.clear();
        encode(&ints, &mut out);
        let python = "98cc80cce0d0dfce00011170cf0000010000000000d3ffffff0000000000cd012cd1ff38";
        assert_eq!(out.iter().map(|b| format!("{b:02x}")).collect::<String>(), python);
        // Every integer width round-trips.
        for i in [0i64, 127, 128, -1, -32, -33, 70_000, -70_000, i64::MIN, i64::MAX] {
            out.clear();
            encode(&Value::Int(i), &mut out);
            assert_eq!(decode(&out), Ok(Value::Int(i)));
        }
        let long = Value::Str("x".repeat(70_000));
        out.clear();
        encode(&long, &mut out);
        assert_eq!(decode(&out), Ok(long));
    }
}
