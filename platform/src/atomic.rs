//! Crash-safe file replacement: write a uniquely named temp file beside the target (created with
//! `O_EXCL`), give it its final mode, owner and group, fsync it, rename it over the target, fsync
//! the directory. A reader sees the old file or the new one, never half of either, and never a
//! file with the wrong owner: nothing after the rename needs privilege (under systemd a `chown`
//! after the rename could be killed by the seccomp filter with the change already in place).
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where an atomic write failed: before the target was replaced (nothing changed) or after
/// (the new content is in place, possibly not yet durable).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The target is untouched.
    #[error("{0}")]
    BeforeReplace(io::Error),
    /// The target holds the new content; only the directory fsync failed.
    #[error("replaced, but the directory could not be synced: {0}")]
    AfterReplace(io::Error),
}

impl WriteError {
    /// True when the target already holds the new content.
    pub fn replaced(&self) -> bool {
        matches!(self, Self::AfterReplace(_))
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::BeforeReplace(e) | WriteError::AfterReplace(e) => e,
        }
    }
}

/// Mode and, optionally, owner and group for the new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits (e.g. 0o600).
    pub mode: u32,
    /// `(uid, gid)` to give the file; `None` keeps the writer's.
    pub owner: Option<(u32, u32)>,
}

impl FileMeta {
    /// A file owned by the writer with `mode`.
    pub fn mode(mode: u32) -> Self {
        Self { mode, owner: None }
    }

    /// The mode, owner and group an existing file has.
    pub fn of(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path)?;
        Ok(Self { mode: meta.permissions().mode() & 0o7777, owner: Some((meta.uid(), meta.gid())) })
    }
}

/// Atomically replaces `path` with `bytes`, creating the file with `mode` (e.g. 0o600).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, bytes, FileMeta::mode(mode)).map_err(io::Error::from)
}

/// Atomically replaces `path` with `bytes`, the new file carrying `meta`.
pub fn write_with(path: &Path, bytes: &[u8], meta: FileMeta) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        WriteError::BeforeReplace(io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
    })?;
    // tempfile opens with O_CREAT|O_EXCL and a random name: no two writers share a temp file and
    // a stale one from a crash is never reused. It is created 0600 and only then widened.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(WriteError::BeforeReplace)?;
    let prepare = |file: &File| -> io::Result<()> {
        let mut writer = file;
        writer.write_all(bytes)?;
        if let Some((uid, gid)) = meta.owner {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
        }
        // After fchown: changing the owner clears set-id bits, so the mode goes last.
        file.set_permissions(fs::Permissions::from_mode(meta.mode))?;
        file.sync_all()
    };
    prepare(tmp.as_file()).map_err(WriteError::BeforeReplace)?;
    tmp.persist(path).map_err(|e| WriteError::BeforeReplace(e.error))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(WriteError::AfterReplace)
}

/// Narrows `path` to `mode` when group or others could read it; returns the old mode then.
/// For private keys found too open: the key may have been read, but a device that stopped over
/// it would be worse off — repair, and let the caller warn.
pub fn restrict(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    let current = fs::metadata(path)?.permissions().mode() & 0o7777;
    if current & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(Some(current))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn replaces_whole_file_with_requested_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write(&path, b"first version, longer", 0o600).expect("write 1");
        write(&path, b"second", 0o640).expect("write 2");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn owner_and_group_are_set_before_the_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shadow");
        let me = fs::metadata(dir.path()).expect("meta");
        // Our own ids are always allowed; the point is that the call path runs and keeps them.
        let meta = FileMeta { mode: 0o640, owner: Some((me.uid(), me.gid())) };
        write_with(&path, b"root:*:1:0:99999:7:::\n", meta).expect("write");
        assert_eq!(FileMeta::of(&path).expect("meta"), meta);
    }

    #[test]
    fn a_missing_directory_fails_before_anything_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write_with(&dir.path().join("no/such/dir/file"), b"x", FileMeta::mode(0o600)).expect_err("must fail");
        assert!(!err.replaced());
    }
}
