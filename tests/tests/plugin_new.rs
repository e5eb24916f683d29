//! `switchyard plugin new` and `plugin build`: the README's lifecycle block ("A plugin project:
//! new, build, test, push"), run as written for each language in a directory outside the
//! repository, but for `push` (it needs a running router; the admin API tests cover it): the
//! project builds, and `test-plugin --expect` finds the expected results, which the test also
//! checks itself against `test-plugin --json`; the Rust project's own `cargo test` passes
//! natively. Then the errors: a bad name or language, a
//! non-empty directory, no project, each toolchain missing.
//!
//! The Rust project builds from crates.io like a user's, into a target directory under the
//! plugins' one (`CARGO_TARGET_DIR`, which cargo honours) so that reruns are warm. The
//! componentizers are those `examples/plugins/*/build.sh` install into `$SWITCHYARD_TOOLS`,
//! given through `SWITCHYARD_COMPONENTIZE_PY` / `_JS`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use switchyard_tests::pipelines::scratch_dir;
use switchyard_tests::router_process::switchyard_binary;

const SECTION: &str = "### A plugin project: new, build, test, push";

/// The `sh` block of the README's lifecycle section.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(switchyard_tests::repo_root().join("README.md"))
        .expect("README.md");
    let section = readme
        .split_once(SECTION)
        .map(|(_, rest)| rest)
        .expect("the lifecycle section in README.md");
    let (_, block) = section.split_once("```sh\n").expect("a sh block");
    let (block, _) = block.split_once("\n```").expect("the block's end");
    block.to_owned()
}

/// Where the example build scripts install their componentizers.
fn tools_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchyard/tools")
        })
}

/// The environment variable and path of a language's componentizer, installed (by the
/// examples' build script, the first time) if missing.
fn componentizer(language: &str) -> Option<(&'static str, PathBuf)> {
    let (var, path) = match language {
        "python" => (
            "SWITCHYARD_COMPONENTIZE_PY",
            tools_dir().join("py/bin/componentize-py"),
        ),
        "javascript" => (
            "SWITCHYARD_COMPONENTIZE_JS",
            tools_dir().join("js/node_modules/.bin/componentize-js"),
        ),
        _ => return None,
    };
    if !path.is_file() {
        switchyard_tests::polyglot_plugin(language, "route");
    }
    Some((var, path))
}

/// `switchyard ARGS` in `dir` with `env` set and `remove` unset: (exit code, stdout, stderr).
fn switchyard(
    args: &[&str],
    dir: &Path,
    env: &[(&str, &Path)],
    remove: &[&str],
) -> (Option<i32>, String, String) {
    let mut command = Command::new(switchyard_binary().expect("switchyard binary"));
    command.args(args).current_dir(dir);
    // Unset first, so that `env` can give a removed variable a value of its own.
    for k in remove {
        command.env_remove(k);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("switchyard runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// JSON lines of a file, `#` and blank lines skipped.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The README's block for `language`, run with bash in a scratch directory outside the
/// repository, `switchyard` on the PATH; then the checks of the project it made.
fn lifecycle(language: &str) {
    let scratch = scratch_dir(&format!("plugin-new-{language}"));
    let root = switchyard_tests::repo_root();
    assert!(!scratch.starts_with(&root), "{}", scratch.display());

    let block = readme_block();
    assert!(block.contains("--lang rust"), "{block}");
    // The block as a reader runs it for this language, but `push`, which needs a router.
    let script: Vec<String> = block
        .lines()
        .map(|l| l.split_once("  #").map_or(l, |(code, _)| code).trim_end())
        .filter(|l| !l.starts_with("switchyard plugin push"))
        .map(|l| l.replace("--lang rust", &format!("--lang {language}")))
        .collect();
    assert!(script.iter().any(|l| l.contains("--expect")), "{script:?}");

    let binary = switchyard_binary().expect("switchyard binary");
    let mut path = vec![binary.parent().expect("binary dir").to_path_buf()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("set -eu\n{}", script.join("\n")))
        .current_dir(&scratch)
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        // As a user's shell: none of the test build's flags.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env(
            "CARGO_TARGET_DIR",
            switchyard_tests::plugins_target_dir().join("plugin-new-rust"),
        );
    if let Some((var, tool)) = componentizer(language) {
        command.env(var, tool);
    }
    let out = command.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the README's block failed for {language} ({}):\n{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        script.join("\n")
    );

    // `plugin build` checked and named the component; `--expect` found every result.
    let project = scratch.join("my-filter");
    let wasm = project.join("my-filter.wasm");
    assert!(wasm.is_file(), "{stdout}");
    assert!(
        stdout.contains("./my-filter.wasm: ok\nversion (sha256): "),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 results as expected (expected.jsonl)"),
        "{stdout}"
    );

    // The results, read here rather than through `--expect`, equal the expected file, and
    // the samples exercise a route, a pass and a dead letter.
    let (code, results, stderr) = switchyard(
        &[
            "test-plugin",
            "my-filter.wasm",
            "--input",
            "samples.jsonl",
            "--route",
            "urgent",
            "--json",
        ],
        &project,
        &[],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let expected = std::fs::read_to_string(project.join("expected.jsonl")).expect("expected");
    assert_eq!(json_lines(&results), json_lines(&expected), "{results}");
    assert_eq!(json_lines(&expected).len(), 5, "{expected}");
    for verdict in ["route", "pass", "dead-letter"] {
        assert!(
            results.contains(&format!("\"verdict\":\"{verdict}\"")),
            "{results}"
        );
    }

    // The Rust project's README says `cargo test` runs the rule natively: it does.
    if language == "rust" {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .arg("test")
            .current_dir(&project)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env(
                "CARGO_TARGET_DIR",
                switchyard_tests::plugins_target_dir().join("plugin-new-native"),
            )
            .output()
            .expect("cargo test runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 3 passed"),
            "cargo test in the project:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The code a user starts from is formatted as rustfmt would.
        let fmt = Command::new("rustfmt")
            .args(["--edition", "2024", "--check", "src/lib.rs"])
            .current_dir(&project)
            .output()
            .expect("rustfmt runs");
        assert!(
            fmt.status.success(),
            "src/lib.rs is not formatted:\n{}",
            String::from_utf8_lossy(&fmt.stdout)
        );
    }

    // Self-contained: the contract is this repository's, nothing points back at it, and the
    // project's README gives the same commands.
    assert_eq!(
        std::fs::read_to_string(project.join("wit/plugin.wit")).expect("wit"),
        std::fs::read_to_string(root.join("wit/plugin.wit")).expect("repo wit")
    );
    for entry in ["Cargo.toml", "package.json", "pyproject.toml"] {
        if let Ok(manifest) = std::fs::read_to_string(project.join(entry)) {
            assert!(
                !manifest.contains("path =") && !manifest.contains(&*root.to_string_lossy()),
                "{manifest}"
            );
        }
    }
    let readme = std::fs::read_to_string(project.join("README.md")).expect("README");
    for line in block.lines().skip(2) {
        let line = line.replace(
            "--pipeline events --stage filter",
            "--pipeline PIPELINE --stage STAGE",
        );
        assert!(
            readme.contains(&line),
            "{line:?} not in the project's README:\n{readme}"
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn a_rust_project_builds_and_decides_as_expected() {
    lifecycle("rust");
}

#[test]
fn a_python_project_builds_and_decides_as_expected() {
    lifecycle("python");
}

#[test]
fn a_javascript_project_builds_and_decides_as_expected() {
    lifecycle("javascript");
}

#[test]
fn the_pinned_toolchains_are_those_the_examples_use() {
    let scratch = scratch_dir("plugin-new-pins");
    let root = switchyard_tests::repo_root();
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for language in ["rust", "python", "javascript"] {
        let (code, _, stderr) = switchyard(
            &["plugin", "new", "p", "--lang", language, "--dir", language],
            &scratch,
            &[],
            &[],
        );
        assert_eq!(code, Some(0), "{stderr}");
    }
    // wit-bindgen: the SDK's version, pinned exactly.
    let sdk = read(root.join("plugin-sdk/Cargo.toml"));
    let version = sdk
        .lines()
        .find_map(|l| l.strip_prefix("wit-bindgen = { version = \""))
        .and_then(|l| l.split('"').next())
        .expect("wit-bindgen in plugin-sdk/Cargo.toml");
    let cargo = read(scratch.join("rust/Cargo.toml"));
    assert!(
        cargo.contains(&format!("version = \"={version}\"")),
        "{cargo}"
    );
    // componentize-py and componentize-js: the build scripts' versions.
    let py = read(root.join("examples/plugins/python/build.sh"));
    let py_version = py
        .split("componentize-py==")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .expect("componentize-py version in build.sh");
    let readme = read(scratch.join("python/README.md"));
    assert!(
        readme.contains(&format!("componentize-py=={py_version}")),
        "{readme}"
    );
    let js = read(root.join("examples/plugins/javascript/build.sh"));
    let js_version = js
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .expect("version= in build.sh");
    let package: Value =
        serde_json::from_str(&read(scratch.join("javascript/package.json"))).expect("package.json");
    assert_eq!(
        package["devDependencies"]["@bytecodealliance/componentize-js"],
        js_version
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn bad_names_languages_and_directories_are_refused() {
    let scratch = scratch_dir("plugin-new-errors");
    let run = |args: &[&str]| switchyard(args, &scratch, &[], &[]);

    let (code, _, stderr) = run(&["plugin", "new", "x", "--lang", "cobol"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'cobol'") && stderr.contains("rust, python, javascript"),
        "{stderr}"
    );

    for bad in ["9lives", "My-Plugin", "../escape", "a b", "test"] {
        let (code, _, stderr) = run(&["plugin", "new", bad, "--lang", "rust"]);
        assert_eq!(code, Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid plugin name {bad:?}")),
            "{bad}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&scratch).expect("scratch").count(),
        0,
        "a refused name wrote something"
    );

    // A non-empty directory is refused and left as it was; an empty one is used.
    let taken = scratch.join("taken");
    std::fs::create_dir_all(&taken).expect("dir");
    std::fs::write(taken.join("app.py"), "mine").expect("file");
    let (code, _, stderr) = run(&["plugin", "new", "p", "--lang", "python", "--dir", "taken"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("taken exists and is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(taken.join("app.py")).expect("app.py"),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&taken).expect("taken").count(), 1);
    std::fs::create_dir_all(scratch.join("empty")).expect("dir");
    let (code, stdout, stderr) = run(&["plugin", "new", "p", "--lang", "python", "--dir", "empty"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("Made the Python plugin `p` in empty."),
        "{stdout}"
    );
    assert!(scratch.join("empty/app.py").is_file());

    // `plugin build` where there is no project.
    std::fs::create_dir_all(scratch.join("nothing")).expect("dir");
    let (code, _, stderr) = run(&["plugin", "build", "nothing"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("nothing holds no plugin project"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn a_missing_toolchain_is_named_with_its_install_command() {
    let scratch = scratch_dir("plugin-new-toolchains");
    for language in ["rust", "python", "javascript"] {
        let (code, _, stderr) = switchyard(
            &["plugin", "new", "p", "--lang", language, "--dir", language],
            &scratch,
            &[],
            &[],
        );
        assert_eq!(code, Some(0), "{stderr}");
    }
    // A PATH with no toolchain on it, and none named by the environment.
    let empty = scratch.join("empty-path");
    std::fs::create_dir_all(&empty).expect("dir");
    let unset = [
        "CARGO",
        "RUSTC",
        "SWITCHYARD_COMPONENTIZE_PY",
        "SWITCHYARD_COMPONENTIZE_JS",
    ];
    let build = |dir: &str, env: &[(&str, &Path)]| {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "PATH") {
            env.push(("PATH", &empty));
        }
        switchyard(&["plugin", "build", dir], &scratch, &env, &unset)
    };
    let cases: [(&str, &[&str]); 3] = [
        (
            "rust",
            &["cargo not found", "rustup target add wasm32-wasip2"],
        ),
        (
            "python",
            &[
                "componentize-py not found",
                "pip install componentize-py==0.25.1",
            ],
        ),
        (
            "javascript",
            &[
                "componentize-js not found",
                "npm install",
                "@bytecodealliance/componentize-js@0.23.0",
            ],
        ),
    ];
    for (language, says) in cases {
        let (code, _, stderr) = build(language, &[]);
        assert_eq!(code, Some(1), "{language}: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{language}: {s:?} not in {stderr}");
        }
    }

    // A tool named by its variable that is not there: the variable is named.
    let bogus = scratch.join("no-such-componentize-py");
    let (code, _, stderr) = build("python", &[("SWITCHYARD_COMPONENTIZE_PY", &bogus)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("SWITCHYARD_COMPONENTIZE_PY=")
            && stderr.contains("is not an executable file"),
        "{stderr}"
    );

    // Rust without the wasm32-wasip2 target: a rustc whose sysroot lacks it.
    let rustc = scratch.join("rustc");
    std::fs::write(&rustc, format!("#!/bin/sh\necho {}\n", scratch.display())).expect("rustc");
    std::fs::set_permissions(&rustc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // cargo itself from the test's own PATH.
    let path = PathBuf::from(std::env::var_os("PATH").unwrap_or_default());
    let (code, _, stderr) = build("rust", &[("RUSTC", &rustc), ("PATH", &path)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the Rust target wasm32-wasip2 is not installed")
            && stderr.contains("`rustup target add wasm32-wasip2`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
