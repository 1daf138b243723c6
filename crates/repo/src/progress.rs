//! What a long operation is doing, for whoever shows progress: a phase name and, where the
//! phase counts bytes, how many of how many (total 0 when it counts nothing).

use std::sync::Arc;

use crate::backup::Progress;

/// Told `(phase, done, total)` as an operation moves; a new phase name means the previous
/// phase ended. Cheap to clone; the default tells no one.
#[derive(Clone)]
pub struct Phases(Arc<dyn Fn(&'static str, u64, u64) + Send + Sync>);

impl Phases {
    pub fn new(f: impl Fn(&'static str, u64, u64) + Send + Sync + 'static) -> Phases {
        Phases(Arc::new(f))
    }

    /// A phase that counts nothing (starting a process, waiting for an answer).
    pub fn enter(&self, phase: &'static str) {
        (self.0)(phase, 0, 0)
    }

    /// A byte counter for `phase`, as the transfer and restore functions take it.
    pub fn bytes(&self, phase: &'static str) -> Progress {
        let f = self.0.clone();
        Arc::new(move |done, total| f(phase, done, total))
    }
}

impl Phases {
    /// The native restore's counter (the snapshot read and checked): "restoring" until its
    /// last byte, then "writing the data dir" for the rest of the writing, the fsyncs and the
    /// WAL segment.
    pub fn restoring(&self) -> Progress {
        let f = self.0.clone();
        Arc::new(move |done, total| if total > 0 && done >= total { f("writing the data dir", 0, 0) } else { f("restoring", done, total) })
    }
}

impl Default for Phases {
    fn default() -> Phases {
        Phases::new(|_, _, _| {})
    }
}

impl std::fmt::Debug for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Phases")
    }
}
