//! Lowercase hex, the one encoding of hashes, pseudonyms, receipts and key ids. One helper, not
//! a `format!` per byte: audit hashes and pseudonyms are made on every request.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_every_nibble_in_lowercase() {
        assert_eq!(super::encode(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(super::encode(&[]), "");
    }
}
