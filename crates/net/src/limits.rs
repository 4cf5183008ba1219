//! Process limits.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit now in force: a
/// process that holds thousands of connections must not fail to open a file at 1,024.
pub fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The soft `RLIMIT_NOFILE` in force.
pub fn nofile() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}
