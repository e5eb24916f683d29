//! The `switchyard` binary as a child process: for signals, crashes and several routers.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `switchyard` binary of this build: `target/<profile>/switchyard`, next to the test
/// executable's `deps/` directory; built once per test process if it is not there yet.
pub fn switchyard_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn locate_or_build() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("unexpected test executable location")?
        .to_path_buf();
    let binary = profile_dir.join("switchyard");
    // Always ask cargo: it rebuilds only if the host changed, so the binary is never stale.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "-p", "switchyard", "--bin", "switchyard"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let output = command
        .current_dir(crate::repo_root())
        .output()
        .context("cannot run cargo build")?;
    if !output.status.success() {
        bail!(
            "building switchyard failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if !binary.is_file() {
        bail!("switchyard was built but is not at {}", binary.display());
    }
    Ok(binary)
}

/// Runs `switchyard` with `args` to completion: (exit code, stdout, stderr).
pub fn run_switchyard(args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let output = Command::new(switchyard_binary()?)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .context("cannot run switchyard")?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// A running router; SIGKILLed on drop. Its output goes to a log file.
pub struct RouterProcess {
    child: Child,
    log: PathBuf,
    exit: Option<Option<i32>>,
}

impl RouterProcess {
    /// Starts `switchyard <args>`.
    pub fn start(args: &[&str]) -> anyhow::Result<RouterProcess> {
        Self::start_binary(&switchyard_binary()?, args)
    }

    /// Starts `<binary> <args>`: another build of switchyard (benches compare two builds), or
    /// another router altogether (the benches' Python routers, `e2e::start_python_router`).
    pub fn start_binary(binary: &std::path::Path, args: &[&str]) -> anyhow::Result<RouterProcess> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "switchyard-router-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(binary);
        // SAFETY: prctl in the forked child before exec only sets a flag of that child. A
        // router outlives no test, even one that is killed.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cannot start switchyard")?;
        Ok(RouterProcess {
            child,
            log,
            exit: None,
        })
    }

    fn signal(&mut self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "kill({pid}, {signal}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once, as a crash or an OOM kill would.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Asks it to drain and stop.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends SIGTERM and asserts that it drains and exits 0 within 30 s (the panic shows its
    /// log).
    pub fn stop_cleanly(&mut self) {
        self.sigterm().expect("SIGTERM sent");
        let code = self
            .wait(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            code,
            Some(0),
            "exit code after SIGTERM; log:\n{}",
            self.log()
        );
    }

    /// Waits up to `timeout` for it to exit; its exit code (`None`: killed by a signal).
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        if let Some(code) = self.exit {
            return Ok(code);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exit = Some(status.code());
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the router is still running after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept for a failing test.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
