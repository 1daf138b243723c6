//! Exit codes, and the one mapping from the library crates' errors to them: 0 ok, 1 operation
//! failed, 2 usage error, 3 damage found.
//!
//! The libraries' errors say what is wrong with the data; the hints here say what to do about
//! it in this command's terms (its flags, the next command to run). Commands return
//! `Result<(), Failure>` and convert library errors with `?`.

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
    pub fn usage(m: impl Into<String>) -> Failure {
        Failure { code: USAGE, message: Some(m.into()), hint: None }
    }

    pub fn failed(m: impl Into<String>) -> Failure {
        Failure { code: FAILED, message: Some(m.into()), hint: None }
    }

    /// An outcome already reported on stdout (differences found, encryption in progress, a
    /// guest that does not fit): exit `code`, print nothing more.
    pub fn quiet(code: i32) -> Failure {
        Failure { code, message: None, hint: None }
    }

    pub fn with_hint(mut self, h: impl Into<String>) -> Failure {
        self.hint = Some(h.into());
        self
    }

    fn of(code: i32, e: &dyn std::error::Error, hint: Option<String>) -> Failure {
        Failure { code, message: Some(chain(e)), hint }
    }
}

/// The error and its causes, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !message.contains(&t) {
            message.push_str(": ");
            message.push_str(&t);
        }
        src = s.source();
    }
    message
}

const VERIFY_HINT: &str = "`quorum snapshot verify` names every fault";

/// Exit code and hint of a bolt error (for every error that carries one).
fn bolt_class(e: &bolt::Error) -> (i32, Option<&'static str>) {
    use bolt::Error as B;
    match e {
        B::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            (USAGE, Some("check the path; a snapshot is made with `quorum snapshot save FILE` or `etcdctl snapshot save FILE`"))
        }
        B::Io { .. } => (FAILED, None),
        B::IsDirectory { .. } => (USAGE, Some("give the snapshot file, or a data dir's member/snap/db")),
        B::Empty { .. } => (DAMAGE, Some("the file holds no data: the save that wrote it did not finish")),
        B::NotBolt { .. } => (DAMAGE, Some("this is not an etcd snapshot or db file, or both meta pages are damaged")),
        B::Truncated { .. } => (DAMAGE, Some("the file was cut short (an interrupted copy or save); take or fetch it again")),
        B::Corrupt { .. } => (DAMAGE, Some(VERIFY_HINT)),
    }
}

impl From<bolt::Error> for Failure {
    fn from(e: bolt::Error) -> Failure {
        let (code, hint) = bolt_class(&e);
        Failure::of(code, &e, hint.map(String::from))
    }
}

impl From<etcd_data::Error> for Failure {
    fn from(e: etcd_data::Error) -> Failure {
        use etcd_data::Error as E;
        match e {
            E::Bolt(b) => b.into(),
            E::Integrity { ref path, .. } => {
                let hint = format!("run `quorum snapshot verify {}` to list every fault", path.display());
                Failure::of(DAMAGE, &e, Some(hint))
            }
            E::Schema { .. } => Failure::of(DAMAGE, &e, None),
            E::Io { ref source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                Failure::of(DAMAGE, &e, Some("the file is shorter than its pages claim: it is truncated".into()))
            }
            E::Io { .. } => Failure::of(FAILED, &e, None),
        }
    }
}

impl From<etcd_data::restore::RestoreError> for Failure {
    fn from(e: etcd_data::restore::RestoreError) -> Failure {
        use etcd_data::restore::RestoreError as R;
        let (code, hint) = match &e {
            R::Config(_) | R::Usage(_) => (USAGE, None),
            R::BumpWithoutCompaction => (USAGE, Some("--bump-revision N needs --mark-compacted, and --mark-compacted needs --bump-revision".into())),
            R::DataDirNotEmpty { .. } => (USAGE, Some("restore into a new or empty directory; Quorum never overwrites a data dir".into())),
            R::WalDirExists { .. } => (USAGE, Some("give a --wal-dir that does not exist yet".into())),
            R::MissingHash { .. } => {
                (USAGE, Some("add --skip-hash-check for a db copied from a data dir (its integrity then rests on the structural check)".into()))
            }
            R::Incompatible { .. } => (USAGE, Some("restore for etcd 3.5 or newer (--target-version 3.5)".into())),
            R::HashMismatch { .. } => (DAMAGE, Some("the snapshot was altered or damaged after it was saved; fetch another copy".into())),
            R::Damaged { path, .. } => (DAMAGE, Some(format!("run `quorum snapshot verify {}` for every fault", path.display()))),
            R::Bolt(b) => {
                let (code, hint) = bolt_class(b);
                (code, hint.map(String::from))
            }
            R::Schema { .. } => (DAMAGE, None),
            R::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => (
                FAILED,
                Some("every member needs room for the db (about the snapshot's size) and 64 MB for its first WAL segment, which etcd preallocates: free space or restore elsewhere".into()),
            ),
            R::Io { .. } | R::Write(_) => (FAILED, None),
        };
        Failure { code, message: Some(format!("restore failed, nothing written: {}", chain(&e))), hint }
    }
}

impl From<etcd_cluster::Error> for Failure {
    fn from(e: etcd_cluster::Error) -> Failure {
        use etcd_cluster::{AuthProblem, Error as E};
        let auth = match e.auth_problem() {
            Some(AuthProblem::NoUser) => Some("authentication is on in this cluster: give --user NAME (and --password, or NAME:PASSWORD; ETCDCTL_USER / ETCDCTL_PASSWORD)"),
            Some(AuthProblem::BadCredentials) => Some("check the user name and password given with --user / --password (or ETCDCTL_USER / ETCDCTL_PASSWORD)"),
            Some(AuthProblem::PermissionDenied) => Some(
                "the user lacks the permission: etcd lets only users with the root role take snapshots, compute hashkv, defragment, disarm alarms and change members; reads and writes need a role granting the keys",
            ),
            None => None,
        };
        if let Some(h) = auth {
            return Failure::of(FAILED, &e, Some(h.to_string()));
        }
        let (code, hint) = match e {
            E::Restore(r) => return r.into(),
            E::Data(d) => return d.into(),
            E::Connect { .. } => (FAILED, Some("check --endpoints, that etcd runs there, --cacert/--cert/--key for TLS, and --dial-timeout")),
            E::Tls(_) => (USAGE, Some("--cacert, --cert and --key take PEM files (--cert and --key together)")),
            E::Usage(_) => (USAGE, None),
            E::Refused(_) => (FAILED, Some("nothing was changed")),
            E::Stopped { ref done, .. } => {
                let hint = format!("{done}; nothing else was changed");
                return Failure::of(FAILED, &e, Some(hint));
            }
            E::HalfReplaced { .. } => (
                FAILED,
                Some("the cluster has one member fewer and is otherwise unchanged: add the successor with `quorum member add NAME --peer-urls URLS --wait`"),
            ),
            E::NotJoined { ref id, quorum_lost, .. } => {
                let start = "start it with the printed flags and an empty data dir (an etcd that exited at start with \
                             `incompatible with current running cluster` or `cannot fetch cluster info from peer urls` did not reach \
                             the cluster in time: start it again)";
                let hint = if quorum_lost {
                    format!("the cluster has no quorum until this member runs (`member remove` cannot commit without one): {start}")
                } else {
                    format!("the member stays in the cluster and counts toward its quorum: {start}, or take it out with `quorum member remove {id}`")
                };
                return Failure::of(FAILED, &e, Some(hint));
            }
            E::Timeout { .. } => (FAILED, Some("a member may be overloaded or stalled; --command-timeout sets the wait")),
            E::Rpc { .. } | E::Io { .. } | E::Stream { .. } => (FAILED, None),
        };
        Failure::of(code, &e, hint.map(String::from))
    }
}

impl From<repo::Error> for Failure {
    fn from(e: repo::Error) -> Failure {
        use repo::Error as E;
        let (code, hint) = match e {
            E::Data(d) => return d.into(),
            E::Restore(r) => return r.into(),
            E::Cluster(c) => return c.into(),
            E::Usage(_) | E::Missing(_) => (USAGE, None),
            E::SecretNeeded { purpose: "new bundle", .. } => (
                USAGE,
                Some("create the bundle key, then give it: `quorum repo key add --repo URL --password-file FILE --bundle --new-password-file BUNDLE_FILE`, then run this command again with --bundle-password-file BUNDLE_FILE".into()),
            ),
            E::SecretNeeded { purpose: "bundle", .. } => {
                (USAGE, Some("give the bundle key with --bundle-password-file, QUORUM_BUNDLE_PASSWORD or --bundle-key-file".into()))
            }
            E::SecretNeeded { .. } => (USAGE, Some("give the repository passphrase with --password-file or QUORUM_PASSWORD, or its key file with --key-file".into())),
            E::WrongSecret { .. } => {
                (USAGE, Some("give the repository passphrase with --password-file or QUORUM_PASSWORD, or its key file with --key-file".into()))
            }
            E::Damaged(_) => (DAMAGE, Some("run `quorum repo check --read-data` to list every damaged object".into())),
            E::Mismatch(_) => (DAMAGE, None),
            E::BadInput(_) => (DAMAGE, Some("nothing was stored from it; check the copy, or take the backup again".into())),
            E::Locked(_) => (
                FAILED,
                Some("wait for the other operation to finish, or pass --retry-lock 5m; a lock left by a killed process on this host is removed automatically, and one from another host after it expires (30 min without refresh)".into()),
            ),
            E::Store { source: object_store::Error::NotFound { .. }, .. } => {
                (FAILED, Some("check the repository URL (and that `quorum repo init --repo URL` was run for it)".into()))
            }
            E::Store { ref source, .. } if repo::retrying::is_transport_error(source) => (
                FAILED,
                Some("the object store stayed unreachable or silent (connections refused, reset or unanswered) for the whole retry window: check that it is up and that --endpoint and --proxy/--no-proxy lead to it, or ride out a longer outage with --store-timeout (default 3m)".into()),
            ),
            E::Store { .. } => (FAILED, Some("check the URL, --endpoint, the credentials (the cloud's standard variables) and --proxy/--no-proxy".into())),
            E::Format(_) | E::Refused(_) | E::Io { .. } | E::Other(_) => (FAILED, None),
        };
        Failure::of(code, &e, hint)
    }
}

impl From<migrate::Error> for Failure {
    fn from(e: migrate::Error) -> Failure {
        use migrate::Error as E;
        let (code, hint) = match e {
            E::Cluster(c) => return c.into(),
            E::Repo(r) => return r.into(),
            E::Usage(_) => (USAGE, None),
            E::Mismatch(_) => (DAMAGE, Some("run the same command again: a resume re-checks every key and writes what is missing")),
            E::Damaged(_) => (
                DAMAGE,
                Some("the backup's snapshot is damaged: run `quorum snapshot verify` on it, or migrate from another backup with --restart or --from-backup"),
            ),
            E::Conflict { .. } => {
                (FAILED, Some("`--dry-run` counts them per namespace/prefix; choose `--on-conflict skip` (keep the target's) or `--on-conflict overwrite`"))
            }
            E::Target { .. } => (FAILED, Some("check --to-endpoints and the --to-* TLS flags; run the same command again to resume")),
            E::Source(_) => (
                FAILED,
                Some("check --from-endpoints and the --from-* TLS flags (with --rekey, that FROM_CONFIG is the source's EncryptionConfiguration); run the same command again to resume"),
            ),
            E::Refused(_) => (FAILED, Some("nothing was changed")),
            E::Diverged(_) => (
                FAILED,
                Some("the target keeps what this migration applied and is not cut over: stop every other writer to the target, then stage again with --restart"),
            ),
            E::NeedsRestart(_) => (FAILED, Some("run with --restart to start a new generation from a new snapshot")),
            E::StillMoving(_) => (
                FAILED,
                Some("the target keeps what was synced and the migration is not cut over; stop every writer to the source, then run the cutover again"),
            ),
            E::NothingToVerify(_) => (USAGE, Some("run the migration without --verify-only first")),
            E::Io { .. } => (FAILED, None),
        };
        Failure::of(code, &e, hint.map(String::from))
    }
}

impl From<numa::Error> for Failure {
    fn from(e: numa::Error) -> Failure {
        Failure::of(USAGE, &e, None)
    }
}

impl From<kube_data::list::ListError> for Failure {
    fn from(e: kube_data::list::ListError) -> Failure {
        match e {
            kube_data::list::ListError::Bolt(b) => b.into(),
            kube_data::list::ListError::Damaged(_) => Failure::of(DAMAGE, &e, Some(VERIFY_HINT.into())),
        }
    }
}

impl From<kube_data::encryption_status::StatusError> for Failure {
    fn from(e: kube_data::encryption_status::StatusError) -> Failure {
        use kube_data::encryption_status::StatusError as S;
        match e {
            S::Bolt(b) => b.into(),
            S::Damaged(_) => Failure::of(DAMAGE, &e, Some(VERIFY_HINT.into())),
        }
    }
}

impl From<kube_data::rekey::RekeyError> for Failure {
    fn from(e: kube_data::rekey::RekeyError) -> Failure {
        use kube_data::encryption::DecryptError;
        use kube_data::rekey::RekeyError as R;
        let (code, hint) = match e {
            R::Bolt(b) => return b.into(),
            R::Usage(_) | R::Exists(_) => (USAGE, None),
            R::Damaged(_) => (DAMAGE, Some(VERIFY_HINT)),
            R::Undecryptable { reason: DecryptError::NeedsKms { .. }, .. } => (
                FAILED,
                Some("KMS values can be re-encrypted only by kube-apiserver with its KMS plugin (rewrite the objects through the API); --skip-undecryptable copies them as they are"),
            ),
            R::Undecryptable { .. } => (
                FAILED,
                Some("--from-config must hold every key the values were written with (old keys included); --skip-undecryptable copies such values as they are"),
            ),
            R::Encrypt { .. } | R::Io { .. } | R::Write(_) => (FAILED, None),
        };
        Failure::of(code, &e, hint.map(String::from))
    }
}

impl From<kube_data::export::ExportError> for Failure {
    fn from(e: kube_data::export::ExportError) -> Failure {
        use kube_data::export::ExportError as X;
        let (code, hint) = match e {
            X::List(l) => return l.into(),
            X::Exists(_) => (USAGE, Some("give a new directory with -o")),
            X::Damaged { .. } => (DAMAGE, Some("--skip-unreadable exports the objects that can be read; `quorum snapshot verify` names every fault")),
            X::Unreadable { .. } => (FAILED, Some("give --encryption-config with their keys, or --skip-unreadable to export the rest")),
            X::Empty { .. } => (FAILED, Some("`quorum k8s ls SNAPSHOT` lists what the snapshot holds")),
            X::Io { .. } => (FAILED, None),
        };
        Failure::of(code, &e, hint.map(String::from))
    }
}
