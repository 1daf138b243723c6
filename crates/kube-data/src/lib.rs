//! Kubernetes meaning of etcd data: which object a key holds ([`keys`]), how its value is
//! stored ([`value`]: protobuf envelope, JSON, CBOR), and encryption at rest
//! ([`encryption`]: aescbc, aesgcm, secretbox, identity; KMS values recognised), how far
//! encryption has got in a snapshot ([`encryption_status`]) and offline re-encryption of a
//! snapshot from one configuration to another ([`rekey`]); objects decoded and printed as
//! kubectl prints them ([`typed`], [`print`](mod@print), [`objects`]), sanitized for another cluster
//! ([`sanitize`]) and exported as a directory of manifests ([`export`]).
//!
//! ```
//! let k = kube_data::keys::parse(b"/registry/pods/default/web-0").unwrap();
//! assert_eq!((k.resource.as_str(), k.namespace.as_deref(), k.name.as_str()), ("pods", Some("default"), "web-0"));
//! ```

pub mod encryption;
pub mod encryption_status;
pub mod export;
pub mod keys;
pub mod list;
pub mod objects;
pub mod print;
pub mod rekey;
pub mod resources;
pub mod sanitize;
pub mod typed;
pub mod value;
