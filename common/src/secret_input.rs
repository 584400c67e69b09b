//! Secrets (enrollment tokens, passcodes, unlock tokens) come from stdin or from a file only its
//! owner can read — never from argv, where every user sees them in the process list.
use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable by others.
    #[error("{path} is readable by group or others (mode {mode:o}); chmod 600 it: a secret file must be private")]
    NotPrivate {
        /// The file.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// Nothing was given.
    #[error("the {0} is empty")]
    Empty(&'static str),
}

/// Reads `what` from stdin (`spec` is `-`) or from the file `spec`, which must not be readable by
/// group or others. A trailing newline (and surrounding white space) is stripped.
pub fn read(spec: &str, what: &'static str) -> Result<Zeroizing<String>, InputError> {
    let mut raw = Zeroizing::new(String::new());
    if spec == "-" {
        std::io::stdin()
            .read_to_string(&mut raw)
            .map_err(|source| InputError::Read { path: "stdin".into(), source })?;
    } else {
        let path = Path::new(spec);
        check_private(path)?;
        *raw = std::fs::read_to_string(path).map_err(|source| InputError::Read { path: spec.into(), source })?;
    }
    let value = Zeroizing::new(raw.trim().to_owned());
    if value.is_empty() {
        return Err(InputError::Empty(what));
    }
    Ok(value)
}

/// Reads stdin as one secret, stripping a single trailing newline (a passcode may contain spaces).
pub fn read_stdin_line() -> Result<Zeroizing<String>, InputError> {
    let mut raw = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut raw).map_err(|source| InputError::Read { path: "stdin".into(), source })?;
    let trimmed = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// Fails when `path` can be read by group or others.
pub fn check_private(path: &Path) -> Result<(), InputError> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|source| InputError::Read { path: path.display().to_string(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(InputError::NotPrivate { path: path.display().to_string(), mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn token_files_must_be_private_and_non_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "lk1-abc\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let spec = path.to_str().expect("utf8");
        assert!(matches!(read(spec, "token"), Err(InputError::NotPrivate { mode: 0o644, .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read(spec, "token").expect("read").as_str(), "lk1-abc");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(read(spec, "token"), Err(InputError::Empty("token"))));
    }
}
