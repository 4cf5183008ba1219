//! Blocking filesystem work: which files count, walking the directory, reading one file.
//! Runs inside `spawn_blocking`.

use super::index::FileRead;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// Files larger than this are refused (logged, previous version kept): a resource file this
/// big is a mistake, and reading it would stall the agent and bloat every event.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// What the periodic rescan compares to skip files that did not change since the last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            mtime: meta.modified().ok(),
            len: meta.len(),
        }
    }
}

/// Whether one path component is hidden (`.git`, `.#foo.yaml`, Kubernetes' `..data`).
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Whether a file name is a resource file: `.yaml`/`.yml`/`.json`, not hidden, not an editor's
/// temp or backup file (`#foo.yaml#`, `foo.yaml~`, `~foo.yaml`).
pub(crate) fn is_resource_name(name: &str) -> bool {
    if is_hidden(name) || name.starts_with('#') || name.starts_with('~') || name.ends_with('~') {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => {
            !stem.is_empty() && EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e))
        }
        None => false,
    }
}

/// `abs` relative to `root`, '/'-separated; `None` when outside `root`.
pub(crate) fn relative(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Eligible files found under a directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// relative path -> (absolute path, stamp)
    pub files: std::collections::BTreeMap<String, (PathBuf, Stamp)>,
    /// Directories (relative) that could not be listed: files known below them are not
    /// considered deleted.
    pub failed_dirs: Vec<String>,
}

impl Listing {
    pub(crate) fn covers_failed(&self, rel: &str) -> bool {
        self.failed_dirs.iter().any(|d| {
            d.is_empty()
                || rel == d
                || (rel.starts_with(d.as_str()) && rel[d.len()..].starts_with('/'))
        })
    }

    /// Adds `abs` (relative `rel`) if it is an eligible regular file (symlinks followed).
    pub(crate) fn add_file(&mut self, rel: String, abs: PathBuf, meta: &fs::Metadata) {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if meta.is_file() && is_resource_name(name) {
            self.files.insert(rel, (abs, Stamp::of(meta)));
        }
    }

    /// Walks `dir` (relative `rel`) recursively. Hidden entries are skipped; symlinks to files
    /// are followed, symlinks to directories are not (no loops, no escaping the tree).
    pub(crate) fn walk(&mut self, dir: &Path, rel: &str) {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot list directory; keeping what its files produced before");
                self.failed_dirs.push(rel.to_string());
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot list directory entry");
                    self.failed_dirs.push(rel.to_string());
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden(&name) {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                self.walk(&path, &child_rel);
            } else if let Ok(meta) = fs::metadata(&path) {
                self.add_file(child_rel, path, &meta);
            }
            // A dangling symlink or a file that vanished meanwhile: not present.
        }
    }
}

/// Reads and parses one file. `NotFound` (raced with a delete) is `Missing`; other IO errors
/// are `Unreadable` (worth retrying); a file too large or not UTF-8 is `Refused`.
pub(crate) fn read_file(abs: &Path, rel: &str, cluster: &str) -> FileRead {
    let file = match fs::File::open(abs) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileRead::Missing,
        Err(e) => return FileRead::Unreadable(format!("cannot open: {e}")),
    };
    let mut bytes = Vec::new();
    // Read at most one byte past the limit so a file that grows meanwhile is still bounded.
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        return FileRead::Unreadable(format!("cannot read: {e}"));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return FileRead::Refused(format!(
            "file is larger than the limit of {MAX_FILE_BYTES} bytes"
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return FileRead::Refused(format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        }
    };
    let (resources, errors) = flotilla_model::parse_documents(rel, &text, cluster);
    FileRead::Parsed { resources, errors }
}
