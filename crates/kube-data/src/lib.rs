//! Kubernetes meaning of etcd data: which object a key holds ([`keys`]), how its value is
//! stored ([`value`]: protobuf envelope, JSON, CBOR), and encryption at rest
//! ([`encryption`]: aescbc, aesgcm, secretbox, identity; KMS values recognised).
//!
//! ```
//! let k = kube_data::keys::parse(b"/registry/pods/default/web-0").unwrap();
//! assert_eq!((k.resource.as_str(), k.namespace.as_deref(), k.name.as_str()), ("pods", Some("default"), "web-0"));
//! ```

pub mod encryption;
pub mod keys;
pub mod list;
pub mod value;
