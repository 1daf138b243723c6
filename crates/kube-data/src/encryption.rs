//! Encryption at rest, as kube-apiserver reads it (`kubernetes/apiserver pkg/storage/value`).
//!
//! Value = `k8s:enc:<provider>:v1:<keyname>:<payload>` (KMS: `k8s:enc:kms:v1|v2:<name>:`).
//! * aescbc: `IV(16) ‖ AES-CBC(PKCS#7)`, AES-128/192/256, no authenticated data;
//! * aesgcm: `nonce(12) ‖ ciphertext ‖ tag(16)`, AAD = the full etcd key;
//! * secretbox: `nonce(24) ‖ XSalsa20-Poly1305`, 32-byte key;
//! * identity: the plain value (refused when it starts with `k8s:enc:`);
//! * kms v1/v2: the data key is sealed by an external KMS plugin: reported, not decrypted.
//!
//! An `EncryptionConfiguration` (apiserver.config.k8s.io/v1, YAML or JSON) lists, per set of
//! resources, providers in order: the first encrypts, all decrypt; keys are standard base64.
//! Keys live in [`Key`], which never prints its secret.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use serde::Deserialize;

use crate::value::ENC_PREFIX;

/// A data-encryption key; `Debug` shows only its length.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}-byte key>", self.0.len())
    }
}

#[derive(Debug, Clone)]
pub enum Provider {
    AesCbc(Vec<(String, Key)>),
    AesGcm(Vec<(String, Key)>),
    Secretbox(Vec<(String, Key)>),
    Kms { api_version: String, name: String },
    Identity,
}

impl Provider {
    pub fn label(&self) -> String {
        match self {
            Provider::AesCbc(_) => "aescbc".into(),
            Provider::AesGcm(_) => "aesgcm".into(),
            Provider::Secretbox(_) => "secretbox".into(),
            Provider::Kms { api_version, name } => format!("kms {api_version} {name}"),
            Provider::Identity => "identity".into(),
        }
    }
}

/// One `resources:` entry.
#[derive(Debug, Clone)]
pub struct ResourceRule {
    pub resources: Vec<String>,
    pub providers: Vec<Provider>,
}

#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    pub rules: Vec<ResourceRule>,
}

#[derive(Deserialize)]
struct RawKey {
    name: String,
    secret: String,
}
#[derive(Deserialize)]
struct RawKeys {
    keys: Vec<RawKey>,
}
#[derive(Deserialize)]
struct RawKms {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    name: String,
}
#[derive(Deserialize)]
struct RawProvider {
    aescbc: Option<RawKeys>,
    aesgcm: Option<RawKeys>,
    secretbox: Option<RawKeys>,
    kms: Option<RawKms>,
    identity: Option<serde_yaml::Value>,
}
#[derive(Deserialize)]
struct RawRule {
    resources: Vec<String>,
    providers: Vec<RawProvider>,
}
#[derive(Deserialize)]
struct RawConfig {
    kind: Option<String>,
    resources: Vec<RawRule>,
}

/// Parse an EncryptionConfiguration; errors name the file and, where YAML says, the line.
pub fn parse_config(text: &str, file: &str) -> Result<EncryptionConfig, String> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| format!("{file}: not an EncryptionConfiguration: {e}"))?;
    if let Some(k) = &raw.kind {
        if k != "EncryptionConfiguration" && k != "EncryptionConfig" {
            return Err(format!("{file}: kind {k:?} is not EncryptionConfiguration"));
        }
    }
    let keys = |ks: RawKeys, what: &str, sizes: &[usize]| -> Result<Vec<(String, Key)>, String> {
        ks.keys
            .into_iter()
            .map(|k| {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(k.secret.trim())
                    .map_err(|_| format!("{file}: {what} key {:?}: secret is not standard base64", k.name))?;
                if !sizes.contains(&b.len()) {
                    return Err(format!("{file}: {what} key {:?} is {} bytes (want {sizes:?})", k.name, b.len()));
                }
                Ok((k.name, Key(b)))
            })
            .collect()
    };
    let mut rules = Vec::new();
    for r in raw.resources {
        let mut providers = Vec::new();
        for p in r.providers {
            let n = [p.aescbc.is_some(), p.aesgcm.is_some(), p.secretbox.is_some(), p.kms.is_some(), p.identity.is_some()].iter().filter(|b| **b).count();
            if n != 1 {
                return Err(format!("{file}: each provider entry must name exactly one provider (found {n})"));
            }
            providers.push(if let Some(k) = p.aescbc {
                Provider::AesCbc(keys(k, "aescbc", &[16, 24, 32])?)
            } else if let Some(k) = p.aesgcm {
                Provider::AesGcm(keys(k, "aesgcm", &[16, 24, 32])?)
            } else if let Some(k) = p.secretbox {
                Provider::Secretbox(keys(k, "secretbox", &[32])?)
            } else if let Some(k) = p.kms {
                Provider::Kms { api_version: k.api_version.unwrap_or_else(|| "v1".into()), name: k.name }
            } else {
                Provider::Identity
            });
        }
        rules.push(ResourceRule { resources: r.resources, providers });
    }
    Ok(EncryptionConfig { rules })
}

/// The state of one stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed<'a> {
    Plain(&'a [u8]),
    /// Provider label (`aescbc`, `aesgcm`, `secretbox`, `kms:v1`, `kms:v2`), key name, payload.
    Encrypted { provider: String, key: String, payload: &'a [u8] },
}

/// Split the encryption envelope, if any.
pub fn unseal(v: &[u8]) -> Result<Sealed<'_>, String> {
    let Some(rest) = v.strip_prefix(ENC_PREFIX) else { return Ok(Sealed::Plain(v)) };
    let mut parts = rest.splitn(4, |b| *b == b':');
    let (Some(p), Some(ver), Some(name), Some(payload)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("k8s:enc: prefix without provider, version and key name".into());
    };
    let p = String::from_utf8_lossy(p);
    let ver = String::from_utf8_lossy(ver);
    let provider = if p == "kms" { format!("kms:{ver}") } else { p.into_owned() };
    Ok(Sealed::Encrypted { provider, key: String::from_utf8_lossy(name).into_owned(), payload })
}

/// Why a value could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("encrypted with {provider} key {key:?}, which the configuration does not have")]
    NoKey { provider: String, key: String },
    #[error("encrypted with {provider} key {key:?}, but decryption failed (wrong key, wrong etcd key as authenticated data, or damage)")]
    Failed { provider: String, key: String },
    #[error("encrypted by KMS ({provider}, {key:?}): its data key can be unsealed only by the KMS plugin")]
    NeedsKms { provider: String, key: String },
    #[error("{0}")]
    Malformed(String),
}

type Cbc<A> = cbc::Decryptor<A>;

fn cbc_with<A>(key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>>
where
    A: aes::cipher::BlockDecrypt + aes::cipher::BlockCipher + aes::cipher::KeyInit,
{
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    let mut buf = ct.to_vec();
    let n = Cbc::<A>::new_from_slices(key, iv).ok()?.decrypt_padded_mut::<Pkcs7>(&mut buf).ok()?.len();
    buf.truncate(n);
    Some(buf)
}

fn cbc_decrypt(key: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < 32 || payload.len() % 16 != 0 {
        return None;
    }
    let (iv, ct) = payload.split_at(16);
    match key.len() {
        16 => cbc_with::<aes::Aes128>(key, iv, ct),
        24 => cbc_with::<aes::Aes192>(key, iv, ct),
        32 => cbc_with::<aes::Aes256>(key, iv, ct),
        _ => None,
    }
}

/// AES-GCM with a 12-byte nonce prefix and `aad`.
pub fn gcm_decrypt(key: &[u8], payload: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = payload.split_at(12);
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    let p = Payload { msg: ct, aad };
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key).ok()?.decrypt(nonce, p).ok(),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key).ok()?.decrypt(nonce, p).ok(),
        24 => aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key).ok()?.decrypt(nonce, p).ok(),
        _ => None,
    }
}

fn secretbox_decrypt(key: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    use crypto_secretbox::{aead::Aead as _, KeyInit as _, XSalsa20Poly1305};
    if payload.len() < 24 + 16 {
        return None;
    }
    let (nonce, ct) = payload.split_at(24);
    XSalsa20Poly1305::new_from_slice(key).ok()?.decrypt(crypto_secretbox::Nonce::from_slice(nonce), ct).ok()
}

impl EncryptionConfig {
    /// Every key of every provider of every rule, by (provider label, key name).
    fn keys(&self) -> BTreeMap<(String, String), &Key> {
        let mut m = BTreeMap::new();
        for r in &self.rules {
            for p in &r.providers {
                let (label, ks) = match p {
                    Provider::AesCbc(k) => ("aescbc", k),
                    Provider::AesGcm(k) => ("aesgcm", k),
                    Provider::Secretbox(k) => ("secretbox", k),
                    _ => continue,
                };
                for (name, key) in ks {
                    m.entry((label.to_string(), name.clone())).or_insert(key);
                }
            }
        }
        m
    }

    /// Decrypt a stored value. `etcd_key` is the authenticated data of AES-GCM values.
    pub fn decrypt(&self, value: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, DecryptError> {
        match unseal(value).map_err(DecryptError::Malformed)? {
            Sealed::Plain(v) => Ok(v.to_vec()),
            Sealed::Encrypted { provider, key, payload } => {
                if provider.starts_with("kms") {
                    return Err(DecryptError::NeedsKms { provider, key });
                }
                let keys = self.keys();
                let k = keys.get(&(provider.clone(), key.clone())).ok_or_else(|| DecryptError::NoKey { provider: provider.clone(), key: key.clone() })?;
                let out = match provider.as_str() {
                    "aescbc" => cbc_decrypt(&k.0, payload),
                    "aesgcm" => gcm_decrypt(&k.0, payload, etcd_key),
                    "secretbox" => secretbox_decrypt(&k.0, payload),
                    _ => None,
                };
                out.ok_or(DecryptError::Failed { provider, key })
            }
        }
    }
}
