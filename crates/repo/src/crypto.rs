//! Keys and authenticated encryption.
//!
//! * A repository has two **master keys**, each 64 random bytes: `data` (snapshots, chunk
//!   lists, indexes, manifests) and `bundle` (files given with `--include`: static pod
//!   manifests, certificates, the encryption-at-rest config). The first 32 bytes are the
//!   AES-256-GCM key, the last 32 the BLAKE3 key that names blobs (keyed hash of the
//!   plaintext, so blob ids reveal nothing about content to someone without the key).
//! * A master key is stored only **wrapped**: AES-256-GCM under a key-encryption key derived
//!   from a passphrase (Argon2id, 64 MiB, 3 passes) or from a key file (HKDF-SHA256 with a
//!   random salt). Several wrappings of the same master key may exist (`repo key add`).
//! * Every sealed object is `nonce(12) || ciphertext || tag(16)`, the nonce random. The
//!   associated data binds a ciphertext to its role and name (a blob to its type and id, a
//!   pack header to "pack-header"), so a blob cannot be swapped for another.
//!
//! Random 96-bit nonces are safe for far more than 2^32 seals per key at this repository's
//! scale (a year of hourly 1 GiB backups seals about 10^7 new blobs).
//!
//! AES-256-GCM comes from `ring`, not RustCrypto's `aes-gcm`: every byte of every backup and
//! restore passes through it, and on this project's bench machine (AES-NI, VAES, VPCLMULQDQ)
//! `ring` seals and opens 16 KiB blobs at 8.5 GB/s against 1.5 to 1.9 GB/s (RustCrypto's
//! GHASH multiplies one block at a time). `ring` is already built into the binary (rustls
//! uses it). The format is standard AES-256-GCM either way; a test checks that each opens
//! what the other sealed.
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A master key: AES key + blob-id key. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    enc: [u8; 32],
    id: [u8; 32],
    /// The expanded AES key schedule, made once.
    cipher: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort: overwrite before the memory is released.
        for b in self.enc.iter_mut().chain(self.id.iter_mut()) {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut enc = [0u8; 32];
        let mut id = [0u8; 32];
        rand::rng().fill_bytes(&mut enc);
        rand::rng().fill_bytes(&mut id);
        MasterKey::new(enc, id)
    }

    fn new(enc: [u8; 32], id: [u8; 32]) -> MasterKey {
        MasterKey { cipher: cipher(&enc), enc, id }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&self.enc);
        v.extend_from_slice(&self.id);
        v
    }

    fn from_bytes(b: &[u8]) -> Option<MasterKey> {
        if b.len() != 64 {
            return None;
        }
        Some(MasterKey::new(b[..32].try_into().ok()?, b[32..].try_into().ok()?))
    }

    /// The id of a blob with this plaintext: keyed BLAKE3.
    pub fn blob_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id, plaintext).as_bytes()
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_cipher(&self.cipher, plaintext, aad)
    }

    /// [`MasterKey::seal`] where the plaintext lies: `buf` holds [`NONCE_LEN`] bytes of room for
    /// the nonce, then the plaintext, which is encrypted in place; the tag is appended. For a
    /// caller that builds the plaintext in the buffer it will send (no copy of it).
    pub fn seal_in_place(&self, buf: &mut Vec<u8>, aad: &[u8]) {
        seal_reserved(&self.cipher, buf, aad)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        open_cipher_into(&self.cipher, sealed, aad, &mut out).then_some(out)
    }

    /// [`MasterKey::open`], appending the plaintext to `out` (decrypted in place there, so a
    /// caller can reuse one buffer); false, and `out` as it was, when it does not authenticate.
    pub fn open_into(&self, sealed: &[u8], aad: &[u8], out: &mut Vec<u8>) -> bool {
        open_cipher_into(&self.cipher, sealed, aad, out)
    }

    /// [`MasterKey::open`] without a copy: `sealed` is decrypted where it lies, and the
    /// plaintext is the returned part of it. None when it does not authenticate (and then
    /// `sealed` holds garbage).
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8], aad: &[u8]) -> Option<&'a [u8]> {
        if sealed.len() < OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (text, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let tag = Tag::try_from(&*tag).ok()?;
        self.cipher.open_in_place_separate_tag(nonce, Aad::from(aad), tag, text, 0..).ok().map(|p| &*p)
    }
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

fn seal_cipher(cipher: &LessSafeKey, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&[0; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    seal_reserved(cipher, &mut out, aad);
    out
}

/// `buf` = room for the nonce, then the plaintext: a fresh nonce written into the room, the
/// plaintext encrypted where it lies, the tag appended.
fn seal_reserved(cipher: &LessSafeKey, buf: &mut Vec<u8>, aad: &[u8]) {
    assert!(buf.len() >= NONCE_LEN, "no room for the nonce");
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    buf[..NONCE_LEN].copy_from_slice(&nonce);
    let tag = cipher
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf[NONCE_LEN..])
        .expect("AES-GCM sealing of an in-memory buffer under 64 GiB cannot fail");
    buf.extend_from_slice(tag.as_ref());
}

fn open_cipher_into(cipher: &LessSafeKey, sealed: &[u8], aad: &[u8], out: &mut Vec<u8>) -> bool {
    if sealed.len() < OVERHEAD {
        return false;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (text, tag) = rest.split_at(rest.len() - TAG_LEN);
    let (Ok(nonce), Ok(tag)) = (Nonce::try_assume_unique_for_key(nonce), Tag::try_from(tag)) else {
        return false;
    };
    let was = out.len();
    out.extend_from_slice(text);
    if cipher.open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut out[was..], 0..).is_ok() {
        true
    } else {
        out.truncate(was);
        false
    }
}

fn seal_with(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    seal_cipher(&cipher(key), plaintext, aad)
}

fn open_with(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    open_cipher_into(&cipher(key), sealed, aad, &mut out).then_some(out)
}

/// A secret that unlocks a wrapped master key. Never printed.
pub enum Secret {
    Passphrase(Vec<u8>),
    KeyFile(Vec<u8>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            Secret::KeyFile(_) => f.write_str("KeyFile(<redacted>)"),
        }
    }
}

impl Secret {
    /// A passphrase as read from a file or the environment: one trailing newline is not part
    /// of it (`echo pass > file` is the common way to write one).
    pub fn passphrase(mut p: Vec<u8>) -> Result<Secret> {
        if p.ends_with(b"\n") {
            p.pop();
            if p.ends_with(b"\r") {
                p.pop();
            }
        }
        if p.is_empty() {
            return Err(Error::Usage("the passphrase is empty".into()));
        }
        Ok(Secret::Passphrase(p))
    }

    pub fn key_file(bytes: Vec<u8>) -> Result<Secret> {
        if bytes.len() < 32 {
            return Err(Error::Usage(format!(
                "a key file must hold at least 32 bytes of random data (this one has {}); make one with `head -c 32 /dev/urandom > repo.key`",
                bytes.len()
            )));
        }
        Ok(Secret::KeyFile(bytes))
    }

    fn kind(&self) -> &'static str {
        match self {
            Secret::Passphrase(_) => "passphrase",
            Secret::KeyFile(_) => "keyfile",
        }
    }
}

/// Argon2id cost for passphrases.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params { m_kib: 64 * 1024, t: 3, p: 1 }
    }
}

/// One stored wrapping of a master key (`keys/<kind>-<id>` in the repository).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrappedKey {
    /// "data" or "bundle".
    pub purpose: String,
    /// "passphrase" or "keyfile".
    pub kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2: Option<Argon2Params>,
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub wrapped: Vec<u8>,
    pub created: String,
    pub host: String,
}

fn derive_kek(secret: &Secret, salt: &[u8], argon: Option<Argon2Params>) -> Result<[u8; 32]> {
    let mut kek = [0u8; 32];
    match secret {
        Secret::Passphrase(p) => {
            let a = argon.unwrap_or_default();
            // The parameters come from an unauthenticated key object: refuse absurd ones
            // instead of allocating them.
            if a.m_kib > 4 * 1024 * 1024 || a.t > 100 || a.p > 64 || a.m_kib < 8 {
                return Err(Error::Format(format!("argon2 parameters out of range (m={} KiB, t={}, p={})", a.m_kib, a.t, a.p)));
            }
            let params = argon2::Params::new(a.m_kib, a.t, a.p, Some(32)).map_err(|e| Error::Format(format!("argon2 parameters: {e}")))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p, salt, &mut kek)
                .map_err(|e| Error::Format(format!("argon2: {e}")))?;
        }
        Secret::KeyFile(k) => {
            hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), k).expand(b"quorum repository key file", &mut kek).expect("32 bytes is a valid HKDF-SHA256 length");
        }
    }
    Ok(kek)
}

fn aad_for(purpose: &str) -> Vec<u8> {
    format!("quorum-master-key:{purpose}").into_bytes()
}

/// Wrap `key` for `purpose` under `secret`.
pub fn wrap(key: &MasterKey, purpose: &str, secret: &Secret, argon: Argon2Params) -> Result<WrappedKey> {
    let mut salt = vec![0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let argon = matches!(secret, Secret::Passphrase(_)).then_some(argon);
    let kek = derive_kek(secret, &salt, argon)?;
    let wrapped = seal_with(&kek, &key.to_bytes(), &aad_for(purpose));
    Ok(WrappedKey {
        purpose: purpose.to_string(),
        kdf: secret.kind().to_string(),
        argon2: argon,
        salt,
        wrapped,
        created: crate::now_rfc3339(),
        host: crate::hostname(),
    })
}

/// Unwrap with `secret`; `None` when the secret is not the one this wrapping was made with.
pub fn unwrap(w: &WrappedKey, secret: &Secret) -> Result<Option<MasterKey>> {
    if w.kdf != secret.kind() {
        return Ok(None);
    }
    let kek = derive_kek(secret, &w.salt, w.argon2)?;
    Ok(open_with(&kek, &w.wrapped, &aad_for(&w.purpose)).and_then(|b| MasterKey::from_bytes(&b)))
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Params {
        Argon2Params { m_kib: 64, t: 1, p: 1 }
    }

    #[test]
    fn wrap_unwrap_passphrase_and_keyfile() {
        let k = MasterKey::generate();
        let pass = Secret::passphrase(b"correct horse\n".to_vec()).unwrap();
        let w = wrap(&k, "data", &pass, cheap()).unwrap();
        let back = unwrap(&w, &Secret::passphrase(b"correct horse".to_vec()).unwrap()).unwrap().unwrap();
        assert_eq!(back.to_bytes(), k.to_bytes());
        assert!(unwrap(&w, &Secret::passphrase(b"wrong".to_vec()).unwrap()).unwrap().is_none());
        let file = Secret::key_file(vec![7u8; 32]).unwrap();
        assert!(unwrap(&w, &file).unwrap().is_none(), "a key file never opens a passphrase wrapping");
        let wf = wrap(&k, "data", &file, cheap()).unwrap();
        assert!(wf.argon2.is_none());
        assert_eq!(unwrap(&wf, &file).unwrap().unwrap().to_bytes(), k.to_bytes());
        // A wrapping for one purpose does not open as another.
        let mut other = wf.clone();
        other.purpose = "bundle".into();
        assert!(unwrap(&other, &file).unwrap().is_none());
    }

    #[test]
    fn seal_binds_aad_and_detects_tampering() {
        let k = MasterKey::generate();
        let mut s = k.seal(b"hello", b"a");
        assert_eq!(k.open(&s, b"a").unwrap(), b"hello");
        assert!(k.open(&s, b"b").is_none());
        let last = s.len() - 1;
        s[last] ^= 1;
        assert!(k.open(&s, b"a").is_none());
        assert!(k.open(&s[..10], b"a").is_none());
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }

    /// Repositories written before the switch to `ring` were sealed by RustCrypto's
    /// `aes-gcm`: each must open what the other sealed, nonce || ciphertext || tag alike.
    #[test]
    fn ring_and_rustcrypto_aes_gcm_agree() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let k = MasterKey::generate();
        let rc = aes_gcm::Aes256Gcm::new_from_slice(&k.enc).unwrap();
        for len in [0usize, 1, 15, 16, 17, 8191, 65536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let ours = k.seal(&plain, b"blob");
            let n = aes_gcm::Nonce::from_slice(&ours[..NONCE_LEN]);
            assert_eq!(rc.decrypt(n, Payload { msg: &ours[NONCE_LEN..], aad: b"blob" }).unwrap(), plain);
            let nonce = [len as u8; NONCE_LEN];
            let mut theirs = nonce.to_vec();
            theirs.extend(rc.encrypt(aes_gcm::Nonce::from_slice(&nonce), Payload { msg: &plain, aad: b"blob" }).unwrap());
            assert_eq!(k.open(&theirs, b"blob").unwrap(), plain);
            let mut into = b"kept".to_vec();
            assert!(k.open_into(&theirs, b"blob", &mut into));
            assert_eq!(&into[..4], b"kept");
            assert_eq!(&into[4..], &plain[..]);
            theirs[NONCE_LEN] ^= 1;
            let mut into = b"kept".to_vec();
            assert!(!k.open_into(&theirs, b"blob", &mut into));
            assert_eq!(into, b"kept");
            assert!(k.open_in_place(&mut theirs.clone(), b"blob").is_none());
            theirs[NONCE_LEN] ^= 1;
            assert_eq!(k.open_in_place(&mut theirs, b"blob").unwrap(), &plain[..]);
        }
    }

    #[test]
    fn short_key_file_and_empty_passphrase_are_refused() {
        assert!(Secret::key_file(vec![1; 31]).is_err());
        assert!(Secret::passphrase(b"\n".to_vec()).is_err());
    }
}
