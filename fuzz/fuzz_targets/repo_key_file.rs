//! A key object (`keys/<purpose>-<rand>`) read back from the bucket, as `Repository::open`
//! reads it: the JSON `crypto::WrappedKey`, then `crypto::unwrap` with a key file (HKDF) and,
//! when the object asks for a cheap Argon2 (m ≤ 256 KiB, t ≤ 2, p ≤ 2), with a passphrase.
//! Wrappings asking for more Argon2 work are skipped: `unwrap` accepts up to 4 GiB and 100
//! passes by design, which is slow, not a fault. Errors are fine; panics, hangs and
//! unbounded allocation are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repo::crypto::{unwrap, Secret, WrappedKey};

fuzz_target!(|data: &[u8]| {
    let Ok(w) = serde_json::from_slice::<WrappedKey>(data) else { return };
    let file = Secret::key_file(vec![0x42; 32]).unwrap();
    let _ = unwrap(&w, &file);
    if w.argon2.is_some_and(|a| a.m_kib <= 256 && a.t <= 2 && a.p <= 2) {
        let pass = Secret::passphrase(b"fuzz passphrase".to_vec()).unwrap();
        let _ = unwrap(&w, &pass);
    }
});
