//! Writing results so that nothing is lost and nothing is written where it should not go.
//!
//! Every file is written whole to a temporary file in the target's folder, flushed to disk (`fsync`), and
//! renamed over the target (`tempfile`'s `persist`): a full disk or a crash leaves the previous file as it
//! was, never a truncated one, and a symbolic link at the target is replaced, never written through. Where
//! a run writes several files (`degrade`), all are written before any is renamed into place. Whether the
//! output can be written is checked before the run starts ([`check`]), not after minutes of work.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {}: the folder {} does not exist", .path.display(), .dir.display())]
    NoFolder { path: PathBuf, dir: PathBuf },
    #[error("cannot write {}: {} is not a folder", .path.display(), .dir.display())]
    NotAFolder { path: PathBuf, dir: PathBuf },
    #[error("cannot write {}: it is a folder", .path.display())]
    IsAFolder { path: PathBuf },
    #[error("cannot write {}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// The folder a file is written in (`.` for a bare name).
fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Checks, before a run, that `path` can be written: its folder exists and takes a new file, and it is not
/// a folder itself.
pub fn check(path: &Path) -> Result<(), OutputError> {
    let dir = folder(path);
    check_folder(&dir, path)?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(OutputError::IsAFolder { path: path.to_owned() });
    }
    Ok(())
}

/// Checks that `dir` is an existing folder this process can create files in (`path` names what is to be
/// written there, for the message).
pub fn check_folder(dir: &Path, path: &Path) -> Result<(), OutputError> {
    match std::fs::metadata(dir) {
        Err(_) => return Err(OutputError::NoFolder { path: path.to_owned(), dir: dir.to_owned() }),
        Ok(m) if !m.is_dir() => return Err(OutputError::NotAFolder { path: path.to_owned(), dir: dir.to_owned() }),
        Ok(_) => {}
    }
    tempfile::Builder::new()
        .prefix(".threadleak-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| OutputError::Io { path: path.to_owned(), source })
}

/// A file written whole, flushed, not yet in place.
struct Staged {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

fn stage(path: &Path, text: &[u8]) -> Result<Staged, OutputError> {
    let io = |source| OutputError::Io { path: path.to_owned(), source };
    let mut file = tempfile::Builder::new().prefix(".threadleak-").tempfile_in(folder(path)).map_err(io)?;
    // The file a result replaces keeps its mode; a new one gets the usual 0644, not the temporary file's
    // 0600.
    let mode = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.permissions(),
        _ => std::fs::Permissions::from_mode(0o644),
    };
    file.as_file().set_permissions(mode).map_err(io)?;
    file.write_all(text).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    Ok(Staged { file, path: path.to_owned() })
}

/// Writes `text` to `path` whole or not at all (see the module's documentation).
pub fn write(path: &Path, text: &[u8]) -> Result<(), OutputError> {
    write_all(&[(path.to_owned(), text.to_vec())])
}

/// Writes every file, all or none: each is written and flushed before any is renamed into place, and a
/// failure leaves every target as it was.
pub fn write_all(files: &[(PathBuf, Vec<u8>)]) -> Result<(), OutputError> {
    let mut staged = Vec::with_capacity(files.len());
    for (path, text) in files {
        staged.push(stage(path, text)?);
    }
    for Staged { file, path } in staged {
        file.persist(&path).map_err(|e| OutputError::Io { path, source: e.error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_at_the_target_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write(&link, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "{}");
        assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn what_cannot_be_written_is_said_before() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nodir/x.json");
        assert!(check(&missing).unwrap_err().to_string().ends_with("nodir does not exist"));
        assert!(check(dir.path()).unwrap_err().to_string().ends_with("it is a folder"));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(check(&file.join("x")).unwrap_err().to_string().ends_with("file is not a folder"));
        assert!(check(&dir.path().join("fine.json")).is_ok());
        // The check leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn files_are_written_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("nodir/b"));
        std::fs::write(&a, "old").unwrap();
        assert!(write_all(&[(a.clone(), b"new".to_vec()), (b, b"new".to_vec())]).is_err());
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary file was left");
    }
}
