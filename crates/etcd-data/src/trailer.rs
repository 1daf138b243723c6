//! The sha256 trailer of a snapshot file.
//!
//! `etcdctl snapshot save` writes the bbolt bytes followed by the 32-byte SHA-256 of those
//! bytes, which the server sends after the last data chunk (`v3rpc/maintenance.go`
//! `Snapshot`). The bbolt bytes are a whole number of pages, so a file carries a trailer
//! exactly when `len % 512 == 32` (`hasChecksum` in etcdutl `snapshot/v3_snapshot.go`).
//! A raw `member/snap/db` copied from a data dir has none.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const TRAILER_LEN: u64 = 32;

/// True when a file of `len` bytes carries a sha256 trailer.
pub fn has_trailer(len: u64) -> bool {
    len % 512 == TRAILER_LEN
}

/// The result of checking a file's trailer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Trailer {
    /// No trailer: a raw db file (restore needs `--skip-hash-check`).
    Absent,
    /// The trailer matches the sha256 of the bbolt bytes.
    Match { sha256: String },
    /// The trailer does not match: the file was altered or damaged after it was saved.
    Mismatch { expected: String, actual: String },
}

impl Trailer {
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Trailer::Mismatch { .. })
    }
}

/// Stream the file once, hashing the body, and compare with the trailer. `progress` is called
/// with the number of bytes hashed so far.
pub fn check(path: &Path, mut progress: impl FnMut(u64)) -> Result<Trailer> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if !has_trailer(len) {
        return Ok(Trailer::Absent);
    }
    let body = len - TRAILER_LEN;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < body {
        let want = (body - done).min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..want]).map_err(io)?;
        h.update(&buf[..want]);
        done += want as u64;
        progress(done);
    }
    let mut expected = [0u8; 32];
    f.read_exact(&mut expected).map_err(io)?;
    // The whole file has been read, trailer included.
    progress(len);
    let actual: [u8; 32] = h.finalize().into();
    Ok(if actual == expected {
        Trailer::Match { sha256: hex::encode(actual) }
    } else {
        Trailer::Mismatch { expected: hex::encode(expected), actual: hex::encode(actual) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_rule() {
        assert!(has_trailer(4096 * 6 + 32));
        assert!(!has_trailer(4096 * 6));
        assert!(!has_trailer(31));
    }

    #[test]
    fn match_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let body = vec![7u8; 4096 * 3];
        let mut file = body.clone();
        file.extend_from_slice(&Sha256::digest(&body));
        std::fs::write(&p, &file).unwrap();
        assert!(matches!(check(&p, |_| {}).unwrap(), Trailer::Match { .. }));
        file[100] ^= 1;
        std::fs::write(&p, &file).unwrap();
        assert!(check(&p, |_| {}).unwrap().is_mismatch());
        std::fs::write(&p, &body).unwrap();
        assert_eq!(check(&p, |_| {}).unwrap(), Trailer::Absent);
    }
}
