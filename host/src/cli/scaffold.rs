//! `switchyard plugin new` and `switchyard plugin build`: a plugin project of its own, outside
//! this repository, from nothing to a component checked against the contract.
//!
//! `new` writes a project for one language: the source (a working rule: `priority` `high` to
//! route `urgent`, non-JSON dead-lettered, the rest passed), the contract it builds against
//! (`wit/plugin.wit`, embedded from this repository's `wit/` at compile time, so a project
//! always gets the contract of the binary that made it), sample records, the verdicts
//! `test-plugin --expect` must find for them, and a README with the commands. Nothing needs
//! this repository afterwards: the Rust crate depends on crates.io only (`wit-bindgen`
//! generates the bindings from `wit/`), Python and JavaScript on their componentizers.
//!
//! `build` finds the language from the project's manifest (`Cargo.toml`, `pyproject.toml`,
//! `package.json`), runs its toolchain, writes `<name>.wasm` into the project (as
//! `rpk transform build` does, whatever the language), and loads it as `switchyard inspect`
//! does. A missing toolchain is an error naming the tool and the command that installs it.
//! This module owns neither the toolchains (it never installs one) nor the checks of a
//! component (the plugin engine's).

use anyhow::{Context as _, bail};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The componentize-py the templates and the error messages name: the one the Python
/// examples are built and tested with (`examples/plugins/python/build.sh`).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The componentize-js `package.json` pins: the one the JavaScript examples are built and
/// tested with (`examples/plugins/javascript/build.sh`).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// The `wit-bindgen` a Rust project pins: the SDK's (`plugin-sdk/Cargo.toml`).
pub const WIT_BINDGEN_VERSION: &str = "0.61.1";

/// Where `plugin build` finds componentize-py when it is not on the `PATH`.
pub const COMPONENTIZE_PY_ENV: &str = "SWITCHYARD_COMPONENTIZE_PY";
/// Where `plugin build` finds componentize-js when it is neither installed in the project
/// (`node_modules/.bin`) nor on the `PATH`.
pub const COMPONENTIZE_JS_ENV: &str = "SWITCHYARD_COMPONENTIZE_JS";

/// The contract, from this repository's `wit/` (never a copy that could drift).
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// A plugin's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, built with cargo for wasm32-wasip2.
    Rust,
    /// Python, built with componentize-py.
    #[value(alias = "py")]
    Python,
    /// JavaScript, built with componentize-js.
    #[value(alias = "js")]
    Javascript,
}

impl Language {
    fn title(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Javascript => "JavaScript",
        }
    }

    /// The project's files: (path in the project, template).
    fn files(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Language::Rust => vec![
                ("Cargo.toml", include_str!("templates/rust/Cargo.toml.in")),
                ("src/lib.rs", include_str!("templates/rust/lib.rs")),
            ],
            Language::Python => vec![
                (
                    "pyproject.toml",
                    include_str!("templates/python/pyproject.toml.in"),
                ),
                ("app.py", include_str!("templates/python/app.py")),
            ],
            Language::Javascript => vec![
                (
                    "package.json",
                    include_str!("templates/javascript/package.json.in"),
                ),
                ("plugin.js", include_str!("templates/javascript/plugin.js")),
            ],
        }
    }

    /// The README's language parts: (files table rows, toolchain, notes).
    fn readme_parts(self) -> [&'static str; 3] {
        match self {
            Language::Rust => [
                include_str!("templates/rust/files.md"),
                include_str!("templates/rust/toolchain.md"),
                include_str!("templates/rust/notes.md"),
            ],
            Language::Python => [
                include_str!("templates/python/files.md"),
                include_str!("templates/python/toolchain.md"),
                include_str!("templates/python/notes.md"),
            ],
            Language::Javascript => [
                include_str!("templates/javascript/files.md"),
                include_str!("templates/javascript/toolchain.md"),
                include_str!("templates/javascript/notes.md"),
            ],
        }
    }

    /// The manifest that marks a project of this language, and holds its name.
    fn manifest(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Python => "pyproject.toml",
            Language::Javascript => "package.json",
        }
    }
}

/// Checks a plugin name: it names the project's directory, its package and its `.wasm`, so
/// it must be valid as all three (a Rust package, a Python project, an npm package, a file).
pub fn check_name(name: &str) -> Result<(), String> {
    /// Names cargo refuses for a package (keywords, and the crates every build links).
    const RESERVED: [&str; 18] = [
        "test",
        "std",
        "core",
        "alloc",
        "proc_macro",
        "self",
        "super",
        "crate",
        "fn",
        "mod",
        "struct",
        "enum",
        "impl",
        "trait",
        "type",
        "use",
        "let",
        "match",
    ];
    let mut chars = name.chars();
    let well_formed = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.ends_with(['-', '_']);
    if !well_formed {
        return Err(format!(
            "invalid plugin name {name:?}: use 1 to 64 lowercase ASCII letters, digits, `-` \
             and `_`, starting with a letter and not ending with `-` or `_` (e.g. \
             `priority-router`)"
        ));
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(format!(
            "invalid plugin name {name:?}: reserved in Rust, pick another"
        ));
    }
    Ok(())
}

/// Replaces the templates' `{{...}}` placeholders.
fn fill(template: &str, name: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{wit_bindgen}}", WIT_BINDGEN_VERSION)
        .replace("{{componentize_py}}", COMPONENTIZE_PY_VERSION)
        .replace("{{componentize_js}}", COMPONENTIZE_JS_VERSION)
}

/// Every file of a new project: (path in the project, contents).
fn project_files(name: &str, language: Language) -> Vec<(&'static str, String)> {
    let [files, toolchain, notes] = language.readme_parts();
    let readme = include_str!("templates/common/README.md")
        .replace("{{language}}", language.title())
        .replace("{{files}}", files)
        .replace("{{toolchain}}", toolchain)
        .replace("{{notes}}", notes);
    let mut out: Vec<(&'static str, String)> = language
        .files()
        .into_iter()
        .map(|(path, template)| (path, fill(template, name)))
        .collect();
    out.extend([
        ("wit/plugin.wit", WIT.to_owned()),
        (
            "samples.jsonl",
            include_str!("templates/common/samples.jsonl").to_owned(),
        ),
        (
            "expected.jsonl",
            fill(include_str!("templates/common/expected.jsonl"), name),
        ),
        ("README.md", fill(&readme, name)),
        (
            ".gitignore",
            include_str!("templates/common/gitignore").to_owned(),
        ),
    ]);
    out
}

/// `switchyard plugin new`: writes a project for `language` into `dir` (default `./NAME`),
/// which must not exist or be empty; prints what to do next. Returns the directory.
pub fn new_project(
    name: &str,
    language: Language,
    dir: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<PathBuf> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    // Never overwrite: an existing directory is used only when empty, so `plugin new` can
    // never destroy work (a user who wants to start over deletes the directory).
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("{} exists and cannot be read", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not empty: `plugin new` writes only into a new or empty \
                 directory, and changed nothing (pick another --dir, or remove it)",
                dir.display()
            );
        }
    }
    for (path, contents) in project_files(name, language) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // create_new: a file that appeared meanwhile is not overwritten either.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let shown = dir.display();
    writeln!(
        out,
        "Made the {} plugin `{name}` in {shown}. Next (README.md says more):\n\n  \
         cd {shown}\n  \
         switchyard plugin build\n  \
         switchyard test-plugin {name}.wasm --input samples.jsonl --route urgent --expect expected.jsonl",
        language.title()
    )?;
    Ok(dir)
}

/// A project found by `plugin build`.
#[derive(Debug)]
struct Project {
    dir: PathBuf,
    language: Language,
    name: String,
}

/// Finds the project in `dir`: its language from the manifest present, its name from the
/// manifest.
fn detect(dir: &Path) -> anyhow::Result<Project> {
    anyhow::ensure!(
        dir.is_dir(),
        "{} is not a directory (give the plugin project's directory)",
        dir.display()
    );
    let found: Vec<Language> = [Language::Rust, Language::Python, Language::Javascript]
        .into_iter()
        .filter(|l| dir.join(l.manifest()).is_file())
        .collect();
    let language = match found.as_slice() {
        [one] => *one,
        [] => bail!(
            "{} holds no plugin project: `plugin build` looks for Cargo.toml (Rust), \
             pyproject.toml (Python) or package.json (JavaScript); `switchyard plugin new` \
             makes one",
            dir.display()
        ),
        many => bail!(
            "{} holds more than one kind of project ({}): keep one plugin per directory",
            dir.display(),
            many.iter()
                .map(|l| l.manifest())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let manifest = dir.join(language.manifest());
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let name = match language {
        Language::Rust => toml_name(&text, "package"),
        Language::Python => toml_name(&text, "project"),
        Language::Javascript => serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v["name"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "no \"name\"".to_owned())
            }),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", manifest.display()))?;
    // The name becomes a file name: the same rule as `plugin new`.
    check_name(&name).map_err(|e| anyhow::anyhow!("{}: {e}", manifest.display()))?;
    Ok(Project {
        dir: dir.to_path_buf(),
        language,
        name,
    })
}

/// `[table] name = ".."` of a TOML manifest.
fn toml_name(text: &str, table: &str) -> Result<String, String> {
    let value: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    value
        .get(table)
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("no `name` in [{table}]"))
}

/// `switchyard plugin build`: builds the project in `dir` into `<dir>/<name>.wasm`, checks
/// it against the contract and prints its path and version. The toolchain's own output goes
/// to stderr, so stdout has only the result.
pub fn build(dir: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<PathBuf> {
    let project = detect(dir)?;
    let wit = project.dir.join("wit");
    anyhow::ensure!(
        wit.join("plugin.wit").is_file(),
        "{} is missing: the contract the plugin builds against (`switchyard plugin new` \
         writes it; it is wit/plugin.wit of Switchyard's repository)",
        wit.join("plugin.wit").display()
    );
    let wasm = project.dir.join(format!("{}.wasm", project.name));
    match project.language {
        Language::Rust => build_rust(&project, &wasm)?,
        Language::Python => build_python(&project, &wasm)?,
        Language::Javascript => build_javascript(&project, &wasm)?,
    }
    super::inspect(&wasm, out)?;
    Ok(wasm)
}

fn build_rust(project: &Project, wasm: &Path) -> anyhow::Result<()> {
    const INSTALL: &str = "install Rust with rustup (https://rustup.rs), then \
                           `rustup target add wasm32-wasip2`";
    // `CARGO` and `RUSTC` as cargo itself honours them, else the PATH.
    let cargo = tool_from_env("CARGO")?
        .or_else(|| on_path("cargo"))
        .with_context(|| format!("cargo not found on the PATH: {INSTALL}"))?;
    let rustc = tool_from_env("RUSTC")?
        .or_else(|| on_path("rustc"))
        .with_context(|| format!("rustc not found on the PATH: {INSTALL}"))?;
    // Without the target cargo fails with "can't find crate for `core`", which does not say
    // what to do; the sysroot is asked in the project, so a rust-toolchain file is honoured.
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(&project.dir)
        .output()
        .with_context(|| format!("cannot run {}", rustc.display()))?;
    anyhow::ensure!(
        sysroot.status.success(),
        "{} --print sysroot failed: {}",
        rustc.display(),
        String::from_utf8_lossy(&sysroot.stderr).trim()
    );
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    anyhow::ensure!(
        sysroot.join("lib/rustlib/wasm32-wasip2").is_dir(),
        "the Rust target wasm32-wasip2 is not installed (not in {}): \
         `rustup target add wasm32-wasip2`",
        sysroot.display()
    );
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(project.dir.join("Cargo.toml"))
        .current_dir(&project.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", cargo.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "cargo build failed ({}); its errors are above",
        output.status
    );
    // Where cargo put the component (it depends on CARGO_TARGET_DIR and cargo's config):
    // the cdylib artifact it reports.
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .context(
            "cargo built no .wasm: is `crate-type` in Cargo.toml's [lib] missing \"cdylib\"?",
        )?;
    std::fs::copy(&built, wasm)
        .with_context(|| format!("cannot copy {} to {}", built.display(), wasm.display()))?;
    Ok(())
}

fn build_python(project: &Project, wasm: &Path) -> anyhow::Result<()> {
    let install = format!(
        "install it with `pip install componentize-py=={COMPONENTIZE_PY_VERSION}` (e.g. in a \
         virtualenv: `python3 -m venv .venv && .venv/bin/pip install \
         componentize-py=={COMPONENTIZE_PY_VERSION}`), then put it on the PATH or set \
         {COMPONENTIZE_PY_ENV} to its path"
    );
    let tool = tool_from_env(COMPONENTIZE_PY_ENV)?
        .or_else(|| on_path("componentize-py"))
        .with_context(|| format!("componentize-py not found on the PATH: {install}"))?;
    anyhow::ensure!(
        project.dir.join("app.py").is_file(),
        "{} is missing: componentize-py builds the module `app`",
        project.dir.join("app.py").display()
    );
    warn_other_version(&tool, "componentize-py", COMPONENTIZE_PY_VERSION);
    let mut command = Command::new(&tool);
    command
        .args(["-d", "wit", "-w", "plugin", "componentize", "app", "-o"])
        .arg(wasm.file_name().unwrap_or(wasm.as_os_str()));
    run_tool(command, &project.dir, "componentize-py")
}

fn build_javascript(project: &Project, wasm: &Path) -> anyhow::Result<()> {
    let install = format!(
        "run `npm install` in {} (package.json pins @bytecodealliance/componentize-js \
         {COMPONENTIZE_JS_VERSION}), or install it elsewhere (`npm install \
         @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}`) and set \
         {COMPONENTIZE_JS_ENV} to its node_modules/.bin/componentize-js",
        project.dir.display()
    );
    // The project's own install first, as npm scripts would find it.
    let local = project.dir.join("node_modules/.bin/componentize-js");
    let tool = tool_from_env(COMPONENTIZE_JS_ENV)?
        .or_else(|| is_executable(&local).then_some(local))
        .or_else(|| on_path("componentize-js"))
        .with_context(|| format!("componentize-js not found: {install}"))?;
    on_path("node").context("node not found on the PATH: componentize-js runs on Node.js; install it (https://nodejs.org)")?;
    anyhow::ensure!(
        project.dir.join("plugin.js").is_file(),
        "{} is missing: the module componentize-js builds",
        project.dir.join("plugin.js").display()
    );
    warn_other_version(&tool, "componentize-js", COMPONENTIZE_JS_VERSION);
    let mut command = Command::new(&tool);
    command
        .args([
            "plugin.js",
            "--wit",
            "wit",
            "--world-name",
            "plugin",
            // The host links no wasi:http: a component importing it would be refused.
            "--disable",
            "http",
            "fetch-event",
            "-o",
        ])
        .arg(wasm.file_name().unwrap_or(wasm.as_os_str()));
    run_tool(command, &project.dir, "componentize-js")
}

/// Runs a componentizer in the project, its output (stdout too) on our stderr.
fn run_tool(mut command: Command, dir: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::inherit());
    let status = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    anyhow::ensure!(
        status.success(),
        "{what} failed ({status}); its errors are above"
    );
    Ok(())
}

/// Says so on stderr when the tool's `--version` is not the one the templates were tested
/// with; it may still work, so this is not an error.
fn warn_other_version(tool: &Path, what: &str, tested: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(found) = found
        && !found.split_whitespace().any(|w| w == tested)
    {
        eprintln!(
            "warning: {} says its version is {found:?}; Switchyard's plugins are tested with \
             {what} {tested}",
            tool.display()
        );
    }
}

/// A tool named by an environment variable: a path, or a name looked up on the PATH. Unset
/// or empty: `None`. Set to something that is not there: an error naming the variable.
fn tool_from_env(var: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(&value);
    let found = if path.components().count() > 1 {
        is_executable(&path).then_some(path.clone())
    } else {
        on_path(&path.to_string_lossy())
    };
    match found {
        Some(found) => Ok(Some(found)),
        None => bail!(
            "{var}={} is not an executable file (unset it, or point it at the tool)",
            path.display()
        ),
    }
}

/// `name` in a directory of the PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "priority-router", "my_filter2", "x1-y_z"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "9lives", "-x", "x-", "My", "a b", "../x", "a/b", "a.b", "café", "test", "fn",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn every_placeholder_is_filled() {
        for language in [Language::Rust, Language::Python, Language::Javascript] {
            for (path, text) in project_files("my-plugin", language) {
                assert!(!text.contains("{{"), "{language:?} {path}: {text}");
            }
        }
    }

    #[test]
    fn the_contract_is_this_repository_s() {
        let files = project_files("p", Language::Rust);
        let wit = files.iter().find(|(p, _)| *p == "wit/plugin.wit");
        assert!(wit.is_some_and(|(_, t)| t.contains("package switchyard:plugin@0.1.0;")));
    }
}
