//! Lower-case hex. Encoding writes into a buffer the caller owns (and zeroes, for secrets);
//! decoding zeroes what it built when the input turns out to be bad.
use zeroize::{Zeroize, Zeroizing};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`, in a buffer that is zeroed when dropped.
pub fn encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Lower-case hex of a public value (digests, fingerprints).
pub fn encode_public(bytes: &[u8]) -> String {
    encode(bytes).as_str().to_owned()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses lower- or upper-case hex; `None` for odd lengths or other characters.
pub fn decode(hex: &str) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() / 2));
    for pair in bytes.chunks(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
            _ => {
                out.zeroize();
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_input() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(encode(&bytes).as_str(), "00017f80ff");
        assert_eq!(decode("00017F80ff").as_deref().map(Vec::as_slice), Some(&bytes[..]));
        assert!(decode("abc").is_none());
        assert!(decode("zz").is_none());
        assert_eq!(encode_public(&[0xab]), "ab");
    }
}
