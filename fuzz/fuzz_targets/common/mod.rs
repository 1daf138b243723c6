//! Helpers shared by the fuzz targets (each target includes this file as a module).
#![allow(dead_code)]

use std::path::PathBuf;

/// A per-process scratch directory on tmpfs when there is one (removed and made afresh on
/// first use; the runner script deletes it at the end).
pub fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let p = PathBuf::from(format!("{base}/quorum-fuzz-{name}-{}", std::process::id()));
    if !p.is_dir() {
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
    }
    p
}

/// Splits `data` at the first `sep` byte: (before, after); all of it and empty when absent.
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The master key the repository targets seal their inputs under (random per process): the
/// input is the plaintext an attacker holding the key could write, so the decoders behind
/// the authentication are reached too.
pub fn master_key() -> &'static repo::crypto::MasterKey {
    static K: std::sync::OnceLock<repo::crypto::MasterKey> = std::sync::OnceLock::new();
    K.get_or_init(repo::crypto::MasterKey::generate)
}

/// zstd level 1 of `data` (the repository's objects are compressed before sealing).
pub fn zstd1(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 1).expect("zstd of an in-memory buffer")
}
