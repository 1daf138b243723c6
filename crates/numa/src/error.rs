/// Errors of the NUMA model and its readers; each names the file or line at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{file}:{line}: invalid reserved_huge_pages value {value:?}: {why} (want node:N,size:KiB,count:N) (nova: {exception})")]
    ReservedHugePages { file: String, line: usize, value: String, why: String, exception: &'static str },
    #[error("{file}: {why}")]
    Input { file: String, why: String },
    #[error("instance topology: {0}")]
    Instance(String),
    /// What nova raises: the exception's class name and a message.
    #[error("{message} (nova: {exception})")]
    Nova { exception: &'static str, message: String },
}
