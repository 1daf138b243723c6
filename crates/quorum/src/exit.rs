//! Exit codes and error rendering: 0 ok, 1 operation failed, 2 usage error, 3 damage found.

use std::fmt::Write;

pub const FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const DAMAGE: i32 = 3;

/// A command's failure: the message (cause chain), a hint, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: Option<String>,
    pub hint: Option<String>,
}

impl Failure {

    /// Damage already reported on stdout.
    pub fn damage_quiet() -> Failure {
        Failure { code: DAMAGE, message: None, hint: None }
    }

    pub fn from_data(e: etcd_data::Error, hint: Option<String>) -> Failure {
        use etcd_data::Error as E;
        let (code, default_hint) = match &e {
            E::Bolt(b) => bolt_code(b),
            E::Integrity { .. } | E::Schema { .. } => (DAMAGE, None),
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                (DAMAGE, Some("the file is shorter than its pages claim: it is truncated".to_string()))
            }
            E::Io { .. } => (FAILED, None),
        };
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let t = s.to_string();
            if !message.contains(&t) {
                let _ = write!(message, ": {t}");
            }
            src = s.source();
        }
        Failure { code, message: Some(message), hint: hint.or(default_hint) }
    }
}

pub fn bolt_code(e: &bolt::Error) -> (i32, Option<String>) {
    use bolt::Error as B;
    match e {
        B::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            (USAGE, Some("check the path; a snapshot is made with `etcdctl snapshot save FILE`".into()))
        }
        B::Io { .. } => (FAILED, None),
        B::IsDirectory { .. } => (USAGE, Some("give the snapshot file, or a data dir's member/snap/db".into())),
        B::Empty { .. } => (DAMAGE, Some("the file holds no data: the save that wrote it did not finish".into())),
        B::NotBolt { .. } => (DAMAGE, Some("this is not an etcd snapshot or db file, or both meta pages are damaged".into())),
        B::Truncated { .. } => (DAMAGE, Some("the file was cut short (an interrupted copy or save); take or fetch it again".into())),
        B::Corrupt { .. } => (DAMAGE, None),
    }
}
