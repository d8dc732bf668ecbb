//! What a client certificate names, remembered by the certificate's DER
//! bytes: every call on a connection carries the same certificate, and
//! parsing it (X.509, its SAN) at every call cost the hub about 2 % of
//! its CPU at 2,000 pushes a second. Keyed by the whole certificate, so a
//! value is only ever given for the very bytes it was made from.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Certificates remembered at most; the map is emptied when full (a
/// cache, not a record: a forgotten value is made again).
const KNOWN_CERTIFICATES: usize = 4096;

/// Values made from certificates, by certificate.
pub struct CertificateCache<T>(Mutex<HashMap<Vec<u8>, T>>);

impl<T> Default for CertificateCache<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<T: Clone> CertificateCache<T> {
    /// The value for the certificate `der`, made by `make` (outside the
    /// lock) when not known; a value `make` refuses is not remembered.
    pub fn get_or<E>(&self, der: &[u8], make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if let Some(found) = self.lock().get(der) {
            return Ok(found.clone());
        }
        let made = make()?;
        let mut known = self.lock();
        if known.len() >= KNOWN_CERTIFICATES {
            known.clear();
        }
        known.insert(der.to_vec(), made.clone());
        Ok(made)
    }

    // A panic elsewhere while holding the lock leaves a map of whole
    // entries: each insert is one call.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_value_is_made_once_per_certificate_and_never_given_for_another() {
        let cache = CertificateCache::<String>::default();
        let made = Cell::new(0);
        let make = |name: &str| {
            made.set(made.get() + 1);
            Ok::<_, ()>(name.to_string())
        };
        assert_eq!(cache.get_or(b"cert-a", || make("a")), Ok("a".into()));
        assert_eq!(cache.get_or(b"cert-a", || make("x")), Ok("a".into()));
        assert_eq!(made.get(), 1);
        assert_eq!(cache.get_or(b"cert-b", || make("b")), Ok("b".into()));
        assert_eq!(cache.get_or(b"cert-a!", || make("c")), Ok("c".into()));
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn a_refusal_is_not_remembered_and_a_full_cache_starts_afresh() {
        let cache = CertificateCache::<u32>::default();
        assert_eq!(
            cache.get_or(b"bad", || Err::<u32, _>("unparsable")),
            Err("unparsable")
        );
        assert_eq!(cache.get_or(b"bad", || Ok::<_, &str>(7)), Ok(7));
        for i in 0..KNOWN_CERTIFICATES as u32 {
            assert_eq!(cache.get_or(&i.to_be_bytes(), || Ok::<_, ()>(i)), Ok(i));
        }
        assert!(cache.lock().len() <= KNOWN_CERTIFICATES);
        assert_eq!(cache.get_or(b"bad", || Ok::<_, ()>(8)), Ok(8), "made again");
    }
}
