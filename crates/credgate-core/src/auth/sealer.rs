//! AES-256-GCM sealing of short secrets: whistleblowers' contacts, and the gateway's own keys
//! under the master key. A fresh random nonce each time; the associated data binds a sealed
//! value to what it belongs to (a report id, a key id), so it does not open anywhere else.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

pub struct Sealer(LessSafeKey);

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"),
        ))
    }

    /// A key of its own for another use, derived from this one's secret with HKDF-SHA256 and
    /// `purpose` as the info: one keyring entry serves both, and a value sealed for one use
    /// never opens under the other.
    pub fn derive(secret: &[u8; 32], purpose: &'static [u8]) -> Self {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"credgate sealer").extract(secret);
        let mut key = [0u8; 32];
        prk.expand(&[purpose], Len)
            .and_then(|okm| okm.fill(&mut key))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self::new(&key)
    }

    /// base64(nonce || ciphertext || tag), bound to `id`.
    pub fn seal(&self, id: &str, plain: &str) -> String {
        STANDARD.encode(self.seal_raw(id, plain))
    }

    /// As `seal`, in unpadded base64url: fit for a cookie value or a URL.
    pub fn seal_token(&self, id: &str, plain: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.seal_raw(id, plain))
    }

    pub fn open_token(&self, id: &str, sealed: &str) -> Option<String> {
        self.open_raw(id, URL_SAFE_NO_PAD.decode(sealed).ok()?)
    }

    fn seal_raw(&self, id: &str, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the OS random source works");
        let mut buf = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut buf,
            )
            .expect("sealing a short text cannot fail");
        let mut out = nonce.to_vec();
        out.extend(buf);
        out
    }

    pub fn open(&self, id: &str, sealed: &str) -> Option<String> {
        self.open_raw(id, STANDARD.decode(sealed).ok()?)
    }

    fn open_raw(&self, id: &str, bytes: Vec<u8>) -> Option<String> {
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let mut buf = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}
