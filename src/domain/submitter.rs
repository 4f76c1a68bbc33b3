//! Submitter hashes: the only form in which an email address leaves the process.
//!
//! A keyed hash (HMAC-SHA256) rather than a plain one, so that nobody holding the
//! exported telemetry can confirm a guessed address by hashing it; the same normalised
//! address still always maps to the same hash, which is what deduplication and
//! per-submitter analysis need.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::fields::Email;

/// Computes [`SubmitterHash`]es with the configured secret (`ingest.submitter_secret`).
#[derive(Clone)]
pub struct SubmitterHasher {
    /// The keyed state, ready to be cloned per hash; holds the secret, hence no `Debug`
    /// derive.
    mac: Hmac<Sha256>,
}

impl SubmitterHasher {
    pub fn new(secret: &str) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        Self { mac }
    }

    /// Lowercase hex HMAC-SHA256 of the normalised address.
    pub fn hash(&self, email: &Email) -> SubmitterHash {
        let mut mac = self.mac.clone();
        mac.update(email.as_str().as_bytes());
        SubmitterHash(hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SubmitterHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubmitterHasher(<secret>)")
    }
}

/// 64 lowercase hex characters identifying a submitter without revealing the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubmitterHash(String);

impl SubmitterHash {
    /// Accepts a hash read back from storage, if it has the shape `hash` produces.
    pub fn from_stored(hex: String) -> Option<Self> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then_some(Self(hex))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubmitterHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(raw: &str) -> Email {
        Email::parse(raw).expect("test address is valid")
    }

    #[test]
    fn hash_is_hmac_sha256_hex_of_the_normalised_address() {
        // Reference: printf 'ada@example.com' | openssl dgst -sha256 -hmac 'secret'
        let hash = SubmitterHasher::new("secret").hash(&email(" Ada@Example.COM "));
        assert_eq!(
            hash.as_str(),
            "d1da3149b0fa35cd09c21c293552aeb73c0085ec04332577adec55eafdee7e0e"
        );
        assert_eq!(hash.to_string(), hash.as_str());
    }

    #[test]
    fn same_address_same_hash_different_secret_different_hash() {
        let hasher = SubmitterHasher::new("secret");
        assert_eq!(hasher.hash(&email("a@b.co")), hasher.hash(&email("A@B.CO")));
        assert_ne!(hasher.hash(&email("a@b.co")), hasher.hash(&email("c@b.co")));
        assert_ne!(
            hasher.hash(&email("a@b.co")),
            SubmitterHasher::new("other").hash(&email("a@b.co"))
        );
    }

    #[test]
    fn from_stored_accepts_only_the_hash_shape() {
        let hash = SubmitterHasher::new("secret").hash(&email("a@b.co"));
        assert_eq!(
            SubmitterHash::from_stored(hash.as_str().to_owned()),
            Some(hash)
        );
        assert!(SubmitterHash::from_stored("ab".repeat(32)).is_some());
        assert!(SubmitterHash::from_stored("AB".repeat(32)).is_none());
        assert!(SubmitterHash::from_stored("ab".repeat(31)).is_none());
        assert!(SubmitterHash::from_stored("gg".repeat(32)).is_none());
        assert!(SubmitterHash::from_stored(String::new()).is_none());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let hasher = SubmitterHasher::new("top-secret-value");
        assert_eq!(format!("{hasher:?}"), "SubmitterHasher(<secret>)");
    }
}
