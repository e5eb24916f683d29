//! Files and directories that only this process's user may change: the compiled-plugin cache
//! (machine code the engine runs) and the generated admin token (a credential). Creating them
//! private, and refusing one that another user owns or could write, is here; what they hold
//! belongs to their owners ([`crate::plugin`], [`crate::admin`]).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no argument, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` and its missing parents with mode 0700 (an existing one is left as it is:
/// see [`check_dir`]).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Why `dir` is not private to this user, if it is not: another user owns it, or its group
/// or others may write in it (so files in it could have been planted).
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read its metadata: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    check_owner(&meta)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "its group or other users may write in it (mode {mode:04o}); make it 0700"
        ));
    }
    Ok(())
}

/// Why the secret file `path` is not private to this user, if it is not: another user owns
/// it, or its group or others may read or write it.
pub fn check_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read its metadata: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    check_owner(&meta)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "its group or other users may read it (mode {mode:04o}); make it 0600"
        ));
    }
    Ok(())
}

fn check_owner(meta: &std::fs::Metadata) -> Result<(), String> {
    let ours = euid();
    if meta.uid() != ours {
        return Err(format!(
            "it is owned by uid {}, not by this process's uid {ours}",
            meta.uid()
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` (mode 0600) unless it exists: through a temporary file linked
/// into place, so a reader never sees it half written and of two writers one wins. Whether
/// this call wrote it.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Writes `bytes` to `path` (mode 0600), replacing it: through a temporary file renamed
/// into place.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-private-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_new_directory_is_private_and_a_shared_one_is_refused() {
        let dir = scratch("dir");
        create_dir(&dir.join("a/b")).expect("created");
        assert_eq!(check_dir(&dir.join("a/b")), Ok(()));
        let mode = std::fs::metadata(dir.join("a/b"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::set_permissions(dir.join("a/b"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let why = check_dir(&dir.join("a/b")).expect_err("refused");
        assert!(why.contains("0777"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_secret_file_is_written_once_and_readable_by_its_owner_only() {
        let dir = scratch("file");
        create_dir(&dir).expect("created");
        let path = dir.join("secret");
        assert!(write_new(&path, b"one").expect("written"));
        assert!(!write_new(&path, b"two").expect("kept"));
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        assert_eq!(check_file(&path), Ok(()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let why = check_file(&path).expect_err("refused");
        assert!(why.contains("0644"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
