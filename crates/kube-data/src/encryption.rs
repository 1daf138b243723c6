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
//!
//! Per resource, kube-apiserver concatenates the providers of every entry that names it and looks
//! a resource up exact → `*.<group>` → `*.*` → identity ([`EncryptionConfig::transformer_for`],
//! `transformerFromOverrides` in `pkg/server/options/encryptionconfig/config.go`). Reading tries,
//! in order, every provider and key whose prefix matches (an identity provider matches any value
//! not starting with `k8s:enc:`), first success wins; writing uses the first provider's first
//! key ([`Transformer`]).

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use serde::Deserialize;

use crate::resources::GroupResource;
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

/// A key's secret: standard base64, decoded where it is read so that errors carry its line.
fn b64_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    // Decoded inside the visitor, so the YAML error carries the secret's own line.
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base64 key")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
            if s.trim().is_empty() {
                return Err(E::custom("key has no secret"));
            }
            base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| E::custom("secret is not standard base64"))
        }
    }
    d.deserialize_str(V)
}

#[derive(Deserialize)]
struct RawKey {
    name: String,
    #[serde(deserialize_with = "b64_secret")]
    secret: Vec<u8>,
}
#[derive(Deserialize)]
struct RawKeys {
    #[serde(default)]
    keys: Vec<RawKey>,
}
#[derive(Deserialize)]
struct RawKms {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    name: String,
}
#[derive(Deserialize)]
struct RawProvider {
    aescbc: Option<RawKeys>,
    aesgcm: Option<RawKeys>,
    secretbox: Option<RawKeys>,
    kms: Option<RawKms>,
    identity: Option<yaml_serde::Value>,
}

/// One resource name as kube-apiserver's validation accepts it
/// (`pkg/apis/apiserver/validation/validation_encryption.go` `validateResourceNames`).
fn check_resource_name(res: &str) -> Result<(), String> {
    let gr = GroupResource::parse(res);
    if res.chars().any(|c| c.is_ascii_uppercase()) {
        Err("resource name should not contain capital letters".into())
    } else if res == "*" {
        Err("use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources".into())
    } else if ["apiserveripinfo", "serviceipallocations", "servicenodeportallocations"].contains(&res) {
        Err("resources which do not have REST API/s cannot be encrypted".into())
    } else if gr.group == "events.k8s.io" {
        Err("'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file".into())
    } else if gr.group == "extensions" {
        Err("'extensions' group has been removed and cannot be used for encryption".into())
    } else if gr.group == "*" && gr.resource != "*" {
        Err("encrypting the same resource across groups is not supported".into())
    } else if res.is_empty() {
        Err("empty resource name".into())
    } else {
        Ok(())
    }
}

/// A `resources:` list, validated where it is read (names, duplicates, overlap within the list).
fn resource_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    /// One name, checked as it is read (so its error carries the name's own line).
    struct Name(String);
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            // Checked inside the visitor: the YAML deserializer then marks the error with the
            // scalar's own position.
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Name;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a resource name")
                }
                fn visit_str<E: serde::de::Error>(self, r: &str) -> Result<Name, E> {
                    check_resource_name(r).map_err(|m| E::custom(format!("{r:?}: {m}")))?;
                    Ok(Name(r.to_string()))
                }
            }
            d.deserialize_str(V)
        }
    }
    let list: Vec<String> = Vec::<Name>::deserialize(d)?.into_iter().map(|n| n.0).collect();
    if list.is_empty() {
        return Err(D::Error::custom("at least one resource is required"));
    }
    let grs: Vec<GroupResource> = list.iter().map(|r| GroupResource::parse(r)).collect();
    for (i, a) in grs.iter().enumerate() {
        for (j, b) in grs.iter().enumerate() {
            if i == j {
                continue;
            }
            if a == b {
                return Err(D::Error::custom(format!("{:?}: the same resource cannot be specified multiple times", list[i])));
            }
            let any = GroupResource { group: "*".into(), resource: "*".into() };
            if *a == any || (a.group == b.group && (a.resource == "*" || b.resource == "*")) {
                return Err(D::Error::custom(format!(
                    "{:?} and {:?}: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
                    list[i], list[j]
                )));
            }
        }
    }
    Ok(list)
}

#[derive(Deserialize)]
struct RawRule {
    #[serde(deserialize_with = "resource_list")]
    resources: Vec<String>,
    providers: Vec<RawProvider>,
}
#[derive(Deserialize)]
struct RawConfig {
    kind: Option<String>,
    resources: Vec<RawRule>,
}

/// The 1-based line of the last whole-token occurrence of `needle` in `text` (for errors found
/// after parsing, when YAML positions are gone).
fn line_of(text: &str, needle: &str) -> Option<usize> {
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '-' | '_');
    text.lines().collect::<Vec<_>>().into_iter().enumerate().rev().find_map(|(n, l)| {
        l.match_indices(needle)
            .any(|(at, _)| {
                let before = l[..at].chars().next_back().is_none_or(|c| !token(c));
                let after = l[at + needle.len()..].chars().next().is_none_or(|c| !token(c));
                before && after
            })
            .then_some(n + 1)
    })
}

/// Parse an EncryptionConfiguration (YAML or JSON) and check it as kube-apiserver does: one
/// provider per entry, keys present and of valid sizes, valid resource names, no resource masked
/// by an earlier `*.group` or `*.*` entry. Errors name the file and the line.
pub fn parse_config(text: &str, file: &str) -> Result<EncryptionConfig, String> {
    let raw: RawConfig = yaml_serde::from_str(text).map_err(|e| format!("{file}: not an EncryptionConfiguration: {e}"))?;
    if let Some(k) = &raw.kind {
        if k != "EncryptionConfiguration" && k != "EncryptionConfig" {
            let at = line_of(text, k).map(|l| format!(" (line {l})")).unwrap_or_default();
            return Err(format!("{file}: kind {k:?} is not EncryptionConfiguration{at}"));
        }
    }
    if raw.resources.is_empty() {
        return Err(format!("{file}: at least one resources entry is required"));
    }
    let at = |needle: &str| line_of(text, needle).map(|l| format!("line {l}: ")).unwrap_or_default();
    let keys = |ks: RawKeys, what: &str, sizes: &[usize]| -> Result<Vec<(String, Key)>, String> {
        if ks.keys.is_empty() {
            return Err(format!("{file}: {what} provider has no keys"));
        }
        ks.keys
            .into_iter()
            .map(|k| {
                if k.name.is_empty() {
                    return Err(format!("{file}: {what} key with an empty name"));
                }
                if !sizes.contains(&k.secret.len()) {
                    return Err(format!("{file}: {}{what} key {:?} is {} bytes (want {sizes:?})", at(&k.name), k.name, k.secret.len()));
                }
                Ok((k.name, Key(k.secret)))
            })
            .collect()
    };
    let mut rules = Vec::new();
    let mut kms_names = std::collections::BTreeSet::new();
    let mut seen: Vec<GroupResource> = Vec::new();
    for (i, r) in raw.resources.into_iter().enumerate() {
        if r.providers.is_empty() {
            return Err(format!("{file}: resources[{i}]: at least one provider is required"));
        }
        // kube-apiserver refuses a resource that an earlier `*.group` or `*.*` already covers.
        for res in &r.resources {
            let gr = GroupResource::parse(res);
            let group_any = GroupResource { group: gr.group.clone(), resource: "*".into() };
            let any = GroupResource { group: "*".into(), resource: "*".into() };
            for m in [group_any, any] {
                if seen.contains(&m) {
                    return Err(format!("{file}: {}resource {res:?} is masked by earlier rule {:?}", at(res), m.to_string()));
                }
            }
        }
        seen.extend(r.resources.iter().map(|s| GroupResource::parse(s)));
        let mut providers = Vec::new();
        for (j, p) in r.providers.into_iter().enumerate() {
            let n = [p.aescbc.is_some(), p.aesgcm.is_some(), p.secretbox.is_some(), p.kms.is_some(), p.identity.is_some()].iter().filter(|b| **b).count();
            if n != 1 {
                return Err(format!("{file}: resources[{i}].providers[{j}]: each provider entry must name exactly one provider (found {n})"));
            }
            providers.push(if let Some(k) = p.aescbc {
                Provider::AesCbc(keys(k, "aescbc", &[16, 24, 32])?)
            } else if let Some(k) = p.aesgcm {
                Provider::AesGcm(keys(k, "aesgcm", &[16, 24, 32])?)
            } else if let Some(k) = p.secretbox {
                Provider::Secretbox(keys(k, "secretbox", &[32])?)
            } else if let Some(k) = p.kms {
                let v = k.api_version.unwrap_or_else(|| "v1".into());
                if v != "v1" && v != "v2" {
                    return Err(format!("{file}: {}kms apiVersion {v:?}: only v1 and v2 are supported", at(&v)));
                }
                if k.name.is_empty() {
                    return Err(format!("{file}: resources[{i}].providers[{j}]: kms provider without a name"));
                }
                if v == "v2" && k.name.contains(':') {
                    return Err(format!("{file}: {}invalid KMS provider name {:?}, must not contain ':'", at(&k.name), k.name));
                }
                if !kms_names.insert(k.name.clone()) {
                    return Err(format!("{file}: {}duplicate KMS provider name {:?}, names must be unique", at(&k.name), k.name));
                }
                Provider::Kms { api_version: v, name: k.name }
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
    Encrypted {
        provider: String,
        key: String,
        payload: &'a [u8],
    },
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
    /// A plain value where the resource's providers list no `identity` (kube-apiserver fails it
    /// with "no matching prefix found").
    #[error("not encrypted, and the configuration lists no identity provider for this resource")]
    Unencrypted,
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
    if payload.len() < 32 || !payload.len().is_multiple_of(16) {
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

/// Why a value could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    #[error("the write provider is KMS ({0}): encrypting needs the KMS plugin")]
    NeedsKms(String),
    #[error("{0}")]
    Cipher(String),
}

/// Random bytes from the operating system (IVs and nonces).
pub fn os_random(buf: &mut [u8]) {
    use aes_gcm::aead::rand_core::RngCore;
    aes_gcm::aead::OsRng.fill_bytes(buf)
}

/// AES-CBC with PKCS#7 padding, as `aes.go` `cbc.TransformToStorage`: `iv ‖ ciphertext`.
pub fn cbc_encrypt(key: &[u8], iv: &[u8; 16], plaintext: &[u8]) -> Option<Vec<u8>> {
    use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    fn with<A>(key: &[u8], iv: &[u8], buf: &mut [u8], n: usize) -> Option<usize>
    where
        A: aes::cipher::BlockEncrypt + aes::cipher::BlockCipher + aes::cipher::KeyInit,
    {
        Some(cbc::Encryptor::<A>::new_from_slices(key, iv).ok()?.encrypt_padded_mut::<Pkcs7>(buf, n).ok()?.len())
    }
    let pad = 16 - plaintext.len() % 16;
    let mut out = Vec::with_capacity(16 + plaintext.len() + pad);
    out.extend_from_slice(iv);
    out.extend_from_slice(plaintext);
    out.resize(16 + plaintext.len() + pad, 0);
    let body = &mut out[16..];
    let n = match key.len() {
        16 => with::<aes::Aes128>(key, iv, body, plaintext.len()),
        24 => with::<aes::Aes192>(key, iv, body, plaintext.len()),
        32 => with::<aes::Aes256>(key, iv, body, plaintext.len()),
        _ => None,
    }?;
    debug_assert_eq!(n, plaintext.len() + pad);
    Some(out)
}

/// AES-GCM, as `aes.go` `gcm.TransformToStorage`: `nonce(12) ‖ ciphertext ‖ tag(16)`, `aad`
/// authenticated (kube-apiserver passes the etcd key).
pub fn gcm_encrypt(key: &[u8], nonce: &[u8; 12], plaintext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let n = aes_gcm::Nonce::from_slice(nonce);
    let p = Payload { msg: plaintext, aad };
    let ct = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key).ok()?.encrypt(n, p).ok(),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key).ok()?.encrypt(n, p).ok(),
        24 => aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key).ok()?.encrypt(n, p).ok(),
        _ => None,
    }?;
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ct);
    Some(out)
}

/// NaCl secretbox, as `secretbox.go` `TransformToStorage`: `nonce(24) ‖ tag(16) ‖ ciphertext`.
pub fn secretbox_encrypt(key: &[u8], nonce: &[u8; 24], plaintext: &[u8]) -> Option<Vec<u8>> {
    use crypto_secretbox::{aead::Aead as _, KeyInit as _, XSalsa20Poly1305};
    let ct = XSalsa20Poly1305::new_from_slice(key).ok()?.encrypt(crypto_secretbox::Nonce::from_slice(nonce), plaintext).ok()?;
    let mut out = Vec::with_capacity(24 + ct.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ct);
    Some(out)
}

/// True when `v` is what kube-apiserver stores: the protobuf envelope, CBOR, or a JSON document.
pub fn is_stored_object(v: &[u8]) -> bool {
    use crate::value::{CBOR_MAGIC, PROTO_MAGIC};
    v.starts_with(PROTO_MAGIC)
        || v.starts_with(CBOR_MAGIC)
        || (matches!(v.first(), Some(b'{' | b'[')) && serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok())
}

static IDENTITY: Provider = Provider::Identity;

/// Decrypts a payload: (key, payload, authenticated data).
type Opener = fn(&[u8], &[u8], &[u8]) -> Option<Vec<u8>>;

/// Where a stored value stands against a resource's providers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Class {
    /// Not prefixed with `k8s:enc:`.
    Plain,
    /// Prefixed by a provider and key (or KMS name) of the resource: `aescbc:key1`, `kms:v2:name`.
    Configured(String),
    /// Encrypted, but with a provider or key name the resource's providers do not list (a
    /// best-effort label from the value's prefix).
    NotInConfig(String),
}

/// The providers kube-apiserver uses for one resource.
#[derive(Debug, Clone)]
pub struct Transformer<'a> {
    /// The configured resource that applies (`secrets`, `*.apps`, `*.*`); None when the
    /// configuration does not cover the resource (plain identity, as kube-apiserver).
    pub rule: Option<GroupResource>,
    pub providers: Vec<&'a Provider>,
}

fn provider_prefix(p: &Provider) -> Option<(String, &'static str)> {
    match p {
        Provider::AesCbc(_) => Some(("k8s:enc:aescbc:v1:".into(), "aescbc")),
        Provider::AesGcm(_) => Some(("k8s:enc:aesgcm:v1:".into(), "aesgcm")),
        Provider::Secretbox(_) => Some(("k8s:enc:secretbox:v1:".into(), "secretbox")),
        Provider::Kms { api_version, name } => Some((format!("k8s:enc:kms:{api_version}:{name}:"), "kms")),
        Provider::Identity => None,
    }
}

fn not_in_config_label(value: &[u8]) -> String {
    match unseal(value) {
        Ok(Sealed::Encrypted { provider, key, .. }) => format!("{provider}:{key}"),
        _ => "malformed k8s:enc: prefix".into(),
    }
}

impl<'a> Transformer<'a> {
    /// The write state: `aescbc:key1`, `kms:v2:name`, or `identity`.
    pub fn write_label(&self) -> String {
        match self.providers.first().copied().unwrap_or(&IDENTITY) {
            Provider::AesCbc(k) => format!("aescbc:{}", k[0].0),
            Provider::AesGcm(k) => format!("aesgcm:{}", k[0].0),
            Provider::Secretbox(k) => format!("secretbox:{}", k[0].0),
            Provider::Kms { api_version, name } => format!("kms:{api_version}:{name}"),
            Provider::Identity => "identity".into(),
        }
    }

    /// True when the resource is written in plain (its first provider is identity, or it is
    /// not configured).
    pub fn writes_plain(&self) -> bool {
        matches!(self.providers.first().copied().unwrap_or(&IDENTITY), Provider::Identity)
    }

    /// Classify by prefix only (no decryption): the first provider/key, in configuration order,
    /// whose prefix the value carries. Key names are matched literally (they may hold `:`).
    pub fn classify(&self, value: &[u8]) -> Class {
        if !value.starts_with(ENC_PREFIX) {
            return Class::Plain;
        }
        for p in &self.providers {
            let Some((prefix, label)) = provider_prefix(p) else { continue };
            let Some(rest) = value.strip_prefix(prefix.as_bytes()) else { continue };
            match p {
                Provider::AesCbc(ks) | Provider::AesGcm(ks) | Provider::Secretbox(ks) => {
                    if let Some((name, _)) = ks.iter().find(|(n, _)| rest.starts_with(n.as_bytes()) && rest.get(n.len()) == Some(&b':')) {
                        return Class::Configured(format!("{label}:{name}"));
                    }
                }
                Provider::Kms { api_version, name } => return Class::Configured(format!("kms:{api_version}:{name}")),
                Provider::Identity => {}
            }
        }
        Class::NotInConfig(not_in_config_label(value))
    }

    /// True when `class` is the write state.
    pub fn is_write_state(&self, class: &Class) -> bool {
        match class {
            Class::Plain => self.writes_plain(),
            Class::Configured(l) => !self.writes_plain() && *l == self.write_label(),
            Class::NotInConfig(_) => false,
        }
    }

    /// Read a stored value as kube-apiserver does (`prefixTransformers.TransformFromStorage`):
    /// every provider and key whose prefix matches is tried in order, the first success wins.
    /// `etcd_key` is the authenticated data of AES-GCM. One check beyond kube-apiserver's: an
    /// aescbc plaintext must be a stored object ([`is_stored_object`]), since CBC cannot tell a
    /// wrong key from the right one.
    pub fn read(&self, value: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let mut errors: Vec<DecryptError> = Vec::new();
        for p in &self.providers {
            if let Provider::Identity = p {
                if !value.starts_with(ENC_PREFIX) {
                    return Ok(value.to_vec());
                }
                continue;
            }
            let Some((prefix, label)) = provider_prefix(p) else { continue };
            let Some(rest) = value.strip_prefix(prefix.as_bytes()) else { continue };
            let (ks, f): (&Vec<(String, Key)>, Opener) = match p {
                // CBC is not authenticated: a wrong key passes the padding check about once in
                // 256 values and yields garbage. Only a plaintext that is a stored object counts.
                Provider::AesCbc(ks) => (ks, |k, p, _| cbc_decrypt(k, p).filter(|pt| is_stored_object(pt))),
                Provider::AesGcm(ks) => (ks, gcm_decrypt),
                Provider::Secretbox(ks) => (ks, |k, p, _| secretbox_decrypt(k, p)),
                Provider::Kms { api_version, name } => {
                    errors.push(DecryptError::NeedsKms { provider: format!("kms:{api_version}"), key: name.clone() });
                    continue;
                }
                Provider::Identity => continue,
            };
            let mut matched = false;
            for (name, key) in ks {
                let Some(payload) = rest.strip_prefix(name.as_bytes()).and_then(|r| r.strip_prefix(b":")) else { continue };
                matched = true;
                match f(&key.0, payload, etcd_key) {
                    Some(pt) => return Ok(pt),
                    None => errors.push(DecryptError::Failed { provider: label.into(), key: name.clone() }),
                }
            }
            if !matched {
                let key = match unseal(value) {
                    Ok(Sealed::Encrypted { key, .. }) => key,
                    _ => String::new(),
                };
                errors.push(DecryptError::NoKey { provider: label.into(), key });
            }
        }
        // The most telling error: KMS, then a key that failed, then a missing key.
        let rank = |e: &DecryptError| match e {
            DecryptError::NeedsKms { .. } => 0,
            DecryptError::Failed { .. } => 1,
            _ => 2,
        };
        if let Some(e) = errors.into_iter().min_by_key(rank) {
            return Err(e);
        }
        if value.starts_with(ENC_PREFIX) {
            return Err(match unseal(value) {
                Ok(Sealed::Encrypted { provider, key, .. }) if provider.starts_with("kms") => DecryptError::NeedsKms { provider, key },
                Ok(Sealed::Encrypted { provider, key, .. }) => DecryptError::NoKey { provider, key },
                Ok(Sealed::Plain(_)) => DecryptError::Malformed("unreadable k8s:enc: prefix".into()),
                Err(m) => DecryptError::Malformed(m),
            });
        }
        Err(DecryptError::Unencrypted)
    }

    /// Write `plaintext` as kube-apiserver would (`TransformToStorage`): the first provider's
    /// first key, a fresh IV or nonce from `random`.
    pub fn write(&self, plaintext: &[u8], etcd_key: &[u8], random: &mut dyn FnMut(&mut [u8])) -> Result<Vec<u8>, EncryptError> {
        let p = self.providers.first().copied().unwrap_or(&IDENTITY);
        let (prefix, _) = match provider_prefix(p) {
            None => return Ok(plaintext.to_vec()),
            Some(x) => x,
        };
        let fail = |what: &str| EncryptError::Cipher(format!("{what}: invalid key length"));
        let (name, body) = match p {
            Provider::AesCbc(ks) => {
                let mut iv = [0u8; 16];
                random(&mut iv);
                (&ks[0].0, cbc_encrypt(&ks[0].1 .0, &iv, plaintext).ok_or_else(|| fail("aescbc"))?)
            }
            Provider::AesGcm(ks) => {
                let mut nonce = [0u8; 12];
                random(&mut nonce);
                (&ks[0].0, gcm_encrypt(&ks[0].1 .0, &nonce, plaintext, etcd_key).ok_or_else(|| fail("aesgcm"))?)
            }
            Provider::Secretbox(ks) => {
                let mut nonce = [0u8; 24];
                random(&mut nonce);
                (&ks[0].0, secretbox_encrypt(&ks[0].1 .0, &nonce, plaintext).ok_or_else(|| fail("secretbox"))?)
            }
            Provider::Kms { .. } => return Err(EncryptError::NeedsKms(self.write_label())),
            Provider::Identity => unreachable!("identity has no prefix"),
        };
        let mut out = Vec::with_capacity(prefix.len() + name.len() + 1 + body.len());
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&body);
        Ok(out)
    }
}

impl EncryptionConfig {
    /// Every resource the configuration lists, as written, in order (each once).
    pub fn listed_resources(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rules {
            for s in &r.resources {
                if !out.iter().any(|o| GroupResource::parse(o) == GroupResource::parse(s)) {
                    out.push(s.clone());
                }
            }
        }
        out
    }

    fn providers_of(&self, gr: &GroupResource) -> Vec<&Provider> {
        self.rules.iter().filter(|r| r.resources.iter().any(|s| GroupResource::parse(s) == *gr)).flat_map(|r| r.providers.iter()).collect()
    }

    /// The transformer kube-apiserver uses for `gr`: the providers of every entry naming it,
    /// concatenated in order; looked up exact, then `*.<group>`, then `*.*`; else identity.
    pub fn transformer_for(&self, gr: &GroupResource) -> Transformer<'_> {
        let candidates =
            [gr.clone(), GroupResource { group: gr.group.clone(), resource: "*".into() }, GroupResource { group: "*".into(), resource: "*".into() }];
        for c in candidates {
            let providers = self.providers_of(&c);
            if !providers.is_empty() {
                return Transformer { rule: Some(c), providers };
            }
        }
        Transformer { rule: None, providers: vec![&IDENTITY] }
    }
}

#[cfg(test)]
mod transformer_tests {
    use super::*;

    const K: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn cfg(body: &str) -> Result<EncryptionConfig, String> {
        parse_config(body, "enc.yaml")
    }

    #[test]
    fn lookup_order_and_concatenation() {
        let c = cfg(&format!(
            "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: g, secret: {K}}}]}}\n- resources: [secrets, '*.apps']\n  providers:\n  - identity: {{}}\n- resources: ['*.']\n  providers:\n  - secretbox: {{keys: [{{name: b, secret: {K}}}]}}\n- resources: ['*.*']\n  providers:\n  - aescbc: {{keys: [{{name: c, secret: {K}}}]}}\n"
        ))
        .unwrap();
        let t = c.transformer_for(&GroupResource::parse("secrets"));
        assert_eq!((t.rule.as_ref().unwrap().to_string(), t.providers.len(), t.write_label()), ("secrets".into(), 2, "aesgcm:g".into()));
        assert_eq!(c.transformer_for(&GroupResource::parse("deployments.apps")).write_label(), "identity");
        assert_eq!(c.transformer_for(&GroupResource::parse("configmaps")).rule.unwrap().to_string(), "*.");
        assert_eq!(c.transformer_for(&GroupResource::parse("crontabs.example.com")).write_label(), "aescbc:c");
        assert_eq!(c.listed_resources(), vec!["secrets", "*.apps", "*.", "*.*"]);
        let none = cfg("resources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n").unwrap();
        let t = none.transformer_for(&GroupResource::parse("pods"));
        assert!(t.rule.is_none() && t.writes_plain());
    }

    #[test]
    fn masked_and_invalid_resources_are_refused_with_lines() {
        let e =
            cfg("resources:\n- resources: ['*.*']\n  providers:\n  - identity: {}\n- resources:\n  - secrets\n  providers:\n  - identity: {}\n").unwrap_err();
        assert!(e.contains("line 6") && e.contains("masked by earlier rule \"*.*\""), "{e}");
        let e = cfg("resources:\n- resources:\n  - secrets\n  - '*'\n  providers:\n  - identity: {}\n").unwrap_err();
        assert!(e.contains("use '*.'") && e.contains("line 4"), "{e}");
        let e = cfg("resources:\n- resources: [Secrets]\n  providers:\n  - identity: {}\n").unwrap_err();
        assert!(e.contains("capital") && e.contains("line"), "{e}");
        let e = cfg("resources:\n- resources: [secrets, '*.']\n  providers:\n  - identity: {}\n").unwrap_err();
        assert!(e.contains("overlapping"), "{e}");
        for bad in ["events.events.k8s.io", "deployments.extensions", "secrets.*", "serviceipallocations"] {
            assert!(cfg(&format!("resources:\n- resources: ['{bad}']\n  providers:\n  - identity: {{}}\n")).is_err(), "{bad}");
        }
        let e = cfg("resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: 'AAAA'\n").unwrap_err();
        assert!(e.contains("line 6") && e.contains("3 bytes"), "{e}");
        let e = cfg("resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: '%%%'\n").unwrap_err();
        assert!(e.contains("line 7") && e.contains("not standard base64"), "{e}");
    }

    #[test]
    fn read_write_round_trip_and_classify() {
        let c = cfg(&format!(
            "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: 'a:b', secret: {K}}}]}}\n  - aescbc: {{keys: [{{name: new, secret: {K}}}, {{name: old, secret: {K}}}]}}\n  - kms: {{apiVersion: v2, name: vault, endpoint: 'unix:///k.sock'}}\n  - identity: {{}}\n"
        ))
        .unwrap();
        let t = c.transformer_for(&GroupResource::parse("secrets"));
        let v = t.write(b"hello", b"/registry/secrets/ns/a", &mut os_random).unwrap();
        assert!(v.starts_with(b"k8s:enc:aesgcm:v1:a:b:"));
        assert_eq!(t.classify(&v), Class::Configured("aesgcm:a:b".into()));
        assert!(t.is_write_state(&t.classify(&v)));
        assert_eq!(t.read(&v, b"/registry/secrets/ns/a").unwrap(), b"hello");
        assert!(matches!(t.read(&v, b"/registry/secrets/ns/other"), Err(DecryptError::Failed { .. })), "AAD is the etcd key");
        assert_eq!(t.read(b"plain", b"/k").unwrap(), b"plain");
        assert_eq!(t.classify(b"plain"), Class::Plain);
        assert_eq!(t.classify(b"k8s:enc:aescbc:v1:gone:xxxx"), Class::NotInConfig("aescbc:gone".into()));
        assert!(matches!(t.read(b"k8s:enc:kms:v2:vault:xxxx", b"/k"), Err(DecryptError::NeedsKms { .. })));
        assert!(matches!(t.read(b"k8s:enc:secretbox:v1:x:xxxx", b"/k"), Err(DecryptError::NoKey { .. })));
        // Without identity, plain values are unreadable (as in kube-apiserver).
        let strict = cfg(&format!("resources:\n- resources: [secrets]\n  providers:\n  - secretbox: {{keys: [{{name: s, secret: {K}}}]}}\n")).unwrap();
        let t = strict.transformer_for(&GroupResource::parse("secrets"));
        assert_eq!(t.read(b"plain", b"/k"), Err(DecryptError::Unencrypted));
        let v = t.write(b"x", b"/k", &mut os_random).unwrap();
        assert_eq!(t.read(&v, b"/other").unwrap(), b"x", "secretbox has no AAD");
    }
}
