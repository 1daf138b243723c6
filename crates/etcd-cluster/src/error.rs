use std::path::PathBuf;

/// Errors talking to or acting on a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {endpoint}: {msg}")]
    Connect { endpoint: String, msg: String },
    #[error("{op} on {endpoint} failed: {msg}")]
    Rpc { endpoint: String, op: &'static str, msg: String },
    /// The member did not answer within the command timeout (overloaded, stalled, paused).
    #[error("{op} on {endpoint} failed: timed out after the command timeout ({after:?})")]
    Timeout { endpoint: String, op: &'static str, after: std::time::Duration },
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A safety check refused the operation; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    /// A safety check stopped an operation part way: `done` says what had changed by then
    /// (nothing else was).
    #[error("stopped: {why}")]
    Stopped { why: String, done: String },
    /// `member replace` removed the old member, then adding its successor failed.
    #[error("member {removed} was removed, but adding its successor failed: {source}")]
    HalfReplaced { removed: String, source: Box<Error> },
    /// A member was added (it stays in the membership, and counts toward quorum) but did not
    /// start or catch up within the wait. `quorum_lost`: the other members alone are below the
    /// larger cluster's quorum (a one-member cluster grown to two), so it cannot be removed.
    #[error("member {id} was added but {what} within {timeout:?}")]
    NotJoined { id: String, what: String, timeout: std::time::Duration, quorum_lost: bool },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("snapshot stream from {endpoint} is damaged: {msg}")]
    Stream { endpoint: String, msg: String },
    #[error(transparent)]
    Restore(#[from] etcd_data::restore::RestoreError),
    #[error(transparent)]
    Data(#[from] etcd_data::Error),
}

/// What an authentication refusal from etcd means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProblem {
    /// Authentication is on and no user was given.
    NoUser,
    /// The user name or password is wrong.
    BadCredentials,
    /// The user lacks the permission (maintenance and membership calls need the root role).
    PermissionDenied,
}

impl Error {
    /// Whether etcd refused for authentication or authorization, and how.
    pub fn auth_problem(&self) -> Option<AuthProblem> {
        let msg = match self {
            Error::Connect { msg, .. } | Error::Rpc { msg, .. } | Error::Stream { msg, .. } => msg,
            _ => return None,
        };
        if msg.contains("user name is empty") || msg.contains("user name not found") && msg.contains("token") {
            Some(AuthProblem::NoUser)
        } else if msg.contains("authentication failed") || msg.contains("invalid user ID or password") {
            Some(AuthProblem::BadCredentials)
        } else if msg.contains("permission denied") {
            Some(AuthProblem::PermissionDenied)
        } else {
            None
        }
    }

    /// Why, without naming the endpoint (for a table that names it in another column).
    pub fn reason(&self) -> String {
        match self {
            Error::Connect { msg, .. } => msg.clone(),
            Error::Rpc { op, msg, .. } => format!("{op}: {msg}"),
            Error::Timeout { op, after, .. } => format!("{op}: no answer within the command timeout ({after:?})"),
            e => e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
