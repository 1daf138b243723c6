//! Values on their way from source to target: kept byte for byte, or re-encrypted for the
//! target's keys (`--rekey FROM_CONFIG:TO_CONFIG`).
//!
//! With a rekey, a key of a Kubernetes resource is read as kube-apiserver reads it with the
//! source's configuration (any provider and key it lists for the resource) and written with
//! the target configuration's write provider (a fresh IV or nonce; for AES-GCM the etcd key as
//! authenticated data, so a value only decrypts under its own key). Keys outside the Kubernetes
//! layout, and resources neither configuration covers, pass through unchanged.
//!
//! Since every encryption draws a fresh nonce, two migrations of one value produce different
//! bytes: "already migrated" is decided on plaintexts ([`Codec::target_plain`]).

use kube_data::encryption::{os_random, DecryptError, EncryptError, EncryptionConfig, Transformer};
use kube_data::resources;

/// Two EncryptionConfigurations: the source's and the target's.
pub struct Rekey {
    pub from: EncryptionConfig,
    pub to: EncryptionConfig,
    /// File names, for messages.
    pub from_name: String,
    pub to_name: String,
}

impl std::fmt::Debug for Rekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rekey({} -> {})", self.from_name, self.to_name)
    }
}

/// How values are read and written.
#[derive(Debug, Default)]
pub struct Codec {
    pub rekey: Option<Rekey>,
}

fn transformer<'a>(cfg: &'a EncryptionConfig, key: &[u8]) -> Option<Transformer<'a>> {
    resources::of_key(key).map(|gr| cfg.transformer_for(&gr))
}

/// The resource a key belongs to, for messages (no key names).
pub fn resource_label(key: &[u8]) -> String {
    resources::of_key(key).map(|g| g.to_string()).unwrap_or_else(|| "(not a Kubernetes key)".into())
}

impl Codec {
    /// The plaintext of a source value.
    pub fn source_plain(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, DecryptError> {
        match &self.rekey {
            None => Ok(value.to_vec()),
            Some(r) => match transformer(&r.from, key) {
                None => Ok(value.to_vec()),
                Some(t) => t.read(value, key),
            },
        }
    }

    /// The plaintext of a value found in the target.
    pub fn target_plain(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, DecryptError> {
        match &self.rekey {
            None => Ok(value.to_vec()),
            Some(r) => match transformer(&r.to, key) {
                None => Ok(value.to_vec()),
                Some(t) => t.read(value, key),
            },
        }
    }

    /// The bytes to store in the target for `key`: the source's own value, or `plain` sealed
    /// with the target's write provider.
    pub fn target_value(&self, key: &[u8], source_value: &[u8], plain: &[u8]) -> Result<Vec<u8>, EncryptError> {
        match &self.rekey {
            None => Ok(source_value.to_vec()),
            Some(r) => match transformer(&r.to, key) {
                None => Ok(source_value.to_vec()),
                Some(t) => t.write(plain, key, &mut os_random),
            },
        }
    }

    /// The bytes to store in the target for `key`, from the source's stored value (taken, not
    /// copied, when it is written as it is), and the SHA-256 of its plaintext.
    pub fn seal_source(&self, key: &[u8], source_value: Vec<u8>) -> Result<(Vec<u8>, crate::verify::Digest32), String> {
        let Some(r) = &self.rekey else {
            let d = crate::verify::digest(&source_value);
            return Ok((source_value, d));
        };
        let plain = self.source_plain(key, &source_value).map_err(|_| format!("does not decrypt with {}", r.from_name))?;
        let d = crate::verify::digest(&plain);
        let value = self.target_value(key, &source_value, &plain).map_err(|e| format!("cannot encrypt for the target: {e}"))?;
        Ok((value, d))
    }

    /// `--rekey a.yaml:b.yaml`, or "values kept byte for byte".
    pub fn describe(&self) -> String {
        match &self.rekey {
            None => "values copied byte for byte".into(),
            Some(r) => format!("values re-encrypted: read with {}, written with {}'s write providers", r.from_name, r.to_name),
        }
    }
}
