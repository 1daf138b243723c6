//! kube-data against published data and its own documents: vectors and objects written by a
//! real kube-apiserver, rekeyed snapshots, the sanitization rules as documented.
//!
//! One test binary for all of them: linking is most of a rebuild.

mod published_vectors;
mod rekey;
mod sanitize_docs;
mod typed_goldens;
