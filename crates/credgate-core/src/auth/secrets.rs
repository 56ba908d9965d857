//! Client secrets: generated once, shown once, stored only as argon2id hashes.

use std::sync::OnceLock;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};

/// 256 random bits, base64url: long enough that the hash's cost is not what protects it.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new id for a client: random, not guessable, safe in URLs and logs.
pub fn generate_client_id() -> String {
    format!("cg_{}", uuid::Uuid::new_v4().simple())
}

/// argon2id (the crate's default algorithm and parameters) as a PHC string.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any input")
        .to_string()
}

/// Constant-work check: an unknown client costs the same as a wrong secret, so response timing
/// does not tell which client ids exist.
pub fn verify_secret(stored_hash: Option<&str>, secret: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = || DUMMY.get_or_init(|| hash_secret("no such client")).as_str();
    // A stored value that is no PHC string (a `tls_client_auth` client's marker, a row edited
    // by hand) costs a dummy hash too, so timing does not tell such a client from the others.
    let (parsed, real) = match stored_hash.map(PasswordHash::new) {
        Some(Ok(parsed)) => (parsed, true),
        _ => match PasswordHash::new(dummy()) {
            Ok(parsed) => (parsed, false),
            Err(_) => return false,
        },
    };
    Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_ok()
        && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_its_secret_and_does_not_contain_it() {
        let s = generate_secret();
        let h = hash_secret(&s);
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(&s));
        assert!(verify_secret(Some(&h), &s));
        assert!(!verify_secret(Some(&h), "wrong"));
        assert!(!verify_secret(None, &s));
        assert!(!verify_secret(Some("not a hash"), &s));
        assert!(!verify_secret(Some("!tls_client_auth"), ""));
        assert!(!verify_secret(Some("!tls_client_auth"), "!tls_client_auth"));
    }
}
