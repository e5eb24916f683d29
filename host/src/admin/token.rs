//! The admin API's generated token, for a router whose config sets none (as Jupyter does):
//! nothing changes without a credential, yet the router's own user needs no setup.
//!
//! ```text
//! <state_dir>/admin-token                 64 hex digits (32 random bytes), mode 0600; kept
//!                                         across restarts, shared by routers of one config
//! <runtime dir>/admin-<port>              the path of that file, for the command line
//! ```
//!
//! The runtime directory is `$XDG_RUNTIME_DIR/switchyard`, else
//! `$XDG_STATE_HOME/switchyard`, else `~/.local/state/switchyard` (mode 0700). The command
//! line, given no token, looks up the port of its `--admin` URL there and reads the file it
//! names ([`find`]); only the router's user can. The token itself is never logged.

use crate::private;
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The token file's name in the state directory.
pub const TOKEN_FILE: &str = "admin-token";
/// The name the generated token has in audit lines and version histories.
pub const TOKEN_NAME: &str = "local";

/// The generated token: the one in `<state_dir>/admin-token` if it is there (owned by this
/// user, mode 0600), else a new one written there. The error names the file and what is
/// wrong with it.
pub fn ensure(state_dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    private::create_dir(state_dir)
        .with_context(|| format!("admin.state_dir: cannot create {}", state_dir.display()))?;
    let path = state_dir.join(TOKEN_FILE);
    if !path.exists() {
        let token = random_token()?;
        private::write_new(&path, format!("{token}\n").as_bytes())
            .with_context(|| format!("cannot write the admin token file {}", path.display()))?;
    }
    // Read back even when written here: another router of the same config may have won.
    let token = read(&path)?;
    Ok((token, path))
}

/// Reads a token file, refusing one that another user owns or could read.
pub fn read(path: &Path) -> anyhow::Result<String> {
    private::check_file(path).map_err(|why| {
        anyhow::anyhow!(
            "refusing the admin token file {}: {why} (or remove it: a new token is made at the next start)",
            path.display()
        )
    })?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_graphic()),
        "the admin token file {} does not hold a token (32 characters at least, no spaces); remove it: a new one is made at the next start",
        path.display()
    );
    Ok(token.to_owned())
}

/// 32 bytes from the kernel's random source, as 64 hex digits.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom to make the admin token")?;
    Ok(hex::encode(bytes))
}

/// Where routers note their token file for the command line (see the module doc); `None`
/// without `XDG_RUNTIME_DIR`, `XDG_STATE_HOME` and `HOME`.
pub fn runtime_dir() -> Option<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_RUNTIME_DIR")
        .or_else(|| env("XDG_STATE_HOME"))
        .or_else(|| env("HOME").map(|home| home.join(".local").join("state")))
        .map(|dir| dir.join("switchyard"))
}

fn pointer(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("admin-{port}"))
}

/// Notes that the API on `port` uses the token in `token_file`; removed by
/// [`Published::drop`]. A failure is logged, never fatal: the command line can still be given
/// `--token-file`.
pub fn publish(port: u16, token_file: &Path) -> Option<Published> {
    let dir = runtime_dir()?;
    let path = pointer(&dir, port);
    let token_file = std::path::absolute(token_file).unwrap_or_else(|_| token_file.to_owned());
    let written = private::create_dir(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| private::check_dir(&dir))
        .and_then(|()| {
            private::replace(&path, token_file.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(()) => Some(Published { path, token_file }),
        Err(why) => {
            tracing::warn!(
                dir = %dir.display(), error = %why,
                "Cannot note the admin token file for the command line; give it --token-file."
            );
            None
        }
    }
}

/// A note of [`publish`], removed when dropped (if it still names this router's file).
pub struct Published {
    path: PathBuf,
    token_file: PathBuf,
}

impl Drop for Published {
    fn drop(&mut self) {
        let ours = std::fs::read(&self.path)
            .is_ok_and(|named| named == self.token_file.as_os_str().as_encoded_bytes());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The token of the API on `port` on this machine, as its router noted it: `None` when no
/// router of this user noted one. An error names the file that cannot be used.
pub fn find(port: u16) -> anyhow::Result<Option<String>> {
    let Some(dir) = runtime_dir() else {
        return Ok(None);
    };
    let path = pointer(&dir, port);
    if !path.exists() {
        return Ok(None);
    }
    private::check_dir(&dir)
        .and_then(|()| private::check_file(&path))
        .map_err(|why| anyhow::anyhow!("refusing {}: {why}", path.display()))?;
    let named = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let token_file = PathBuf::from(String::from_utf8_lossy(&named).into_owned());
    read(&token_file).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("switchyard-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (first, path) = ensure(&dir).expect("made");
        assert_eq!(path, dir.join(TOKEN_FILE));
        assert!(
            first.len() == 64 && first.chars().all(|c| c.is_ascii_hexdigit()),
            "{first}"
        );
        let (second, _) = ensure(&dir).expect("kept");
        assert_eq!(first, second);
        std::fs::write(&path, "short\n").expect("overwrite");
        let e = ensure(&dir).expect_err("refused").to_string();
        assert!(
            e.contains("does not hold a token") && e.contains(TOKEN_FILE),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
