/// Errors of the NUMA model and its readers; each names the file or line at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("invalid page size {0:?} (hw:mem_page_size takes small, large, any, a number of KiB or e.g. 2MB, 1GB)")]
    PageSizeInvalid(String),
    #[error("page size {size_kb} KiB is not available on NUMA cell {cell} (it has {available:?} KiB pages)")]
    PageSizeNotSupported { cell: u32, size_kb: u64, available: Vec<u64> },
    #[error("{file}:{line}: invalid reserved_huge_pages value {value:?}: {why} (want node:N,size:KiB,count:N)")]
    ReservedHugePages { file: String, line: usize, value: String, why: String },
    #[error("{file}: {why}")]
    Input { file: String, why: String },
    #[error("instance topology: {0}")]
    Instance(String),
}
