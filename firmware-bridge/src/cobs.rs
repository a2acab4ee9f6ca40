//! Consistent Overhead Byte Stuffing: removes every zero byte so 0x00 can delimit frames.

/// Why a COBS block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CobsError {
    /// The output buffer is too small.
    Overflow,
    /// A code byte points past the end of the block, or the block contains a zero.
    Malformed,
}

/// Worst-case encoded length of `n` bytes (without the delimiter).
pub const fn max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Encodes `src` into `dst`, returning the encoded length (no trailing delimiter).
pub fn encode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    if dst.is_empty() {
        return Err(CobsError::Overflow);
    }
    // `code_idx` is where the current block's code byte goes; `out` the next data byte.
    let mut code_idx = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    for &b in src {
        if b != 0 {
            *dst.get_mut(out).ok_or(CobsError::Overflow)? = b;
            out += 1;
            code += 1;
        }
        // A zero, or a full block of 254 data bytes, closes the block.
        if b == 0 || code == 0xFF {
            dst[code_idx] = code;
            code_idx = out;
            out += 1;
            code = 1;
            if code_idx >= dst.len() {
                return Err(CobsError::Overflow);
            }
        }
    }
    dst[code_idx] = code;
    Ok(out)
}

/// Decodes one block (without its delimiter) into `dst`, returning the decoded length.
pub fn decode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    let mut i = 0;
    let mut out = 0;
    while i < src.len() {
        let code = src[i];
        if code == 0 {
            return Err(CobsError::Malformed);
        }
        let end = i + code as usize;
        if end > src.len() {
            return Err(CobsError::Malformed);
        }
        for &b in &src[i + 1..end] {
            if b == 0 {
                return Err(CobsError::Malformed);
            }
            if out >= dst.len() {
                return Err(CobsError::Overflow);
            }
            dst[out] = b;
            out += 1;
        }
        i = end;
        if code != 0xFF && i < src.len() {
            if out >= dst.len() {
                return Err(CobsError::Overflow);
            }
            dst[out] = 0;
            out += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let mut enc = [0u8; 600];
        let n = encode(data, &mut enc).expect("encode");
        assert!(n <= max_encoded_len(data.len()));
        assert!(!enc[..n].contains(&0));
        let mut dec = [0u8; 600];
        let m = decode(&enc[..n], &mut dec).expect("decode");
        assert_eq!(&dec[..m], data);
    }

    #[test]
    fn known_vectors() {
        // Examples from the COBS paper / Wikipedia.
        let mut out = [0u8; 16];
        let n = encode(&[0x00], &mut out).expect("enc");
        assert_eq!(&out[..n], &[0x01, 0x01]);
        let n = encode(&[0x11, 0x22, 0x00, 0x33], &mut out).expect("enc");
        assert_eq!(&out[..n], &[0x03, 0x11, 0x22, 0x02, 0x33]);
        let n = encode(&[0x11, 0x00, 0x00, 0x00], &mut out).expect("enc");
        assert_eq!(&out[..n], &[0x02, 0x11, 0x01, 0x01, 0x01]);
    }

    #[test]
    fn round_trips() {
        round_trip(&[]);
        round_trip(&[0; 300]);
        let long: [u8; 520] = core::array::from_fn(|i| (i % 255 + 1) as u8);
        round_trip(&long);
        let mixed: [u8; 520] = core::array::from_fn(|i| (i % 7) as u8);
        round_trip(&mixed);
    }
}
