//! The plugin SDK as a crate on its own: it carries the contract (`plugin-sdk/wit/`, a copy of
//! the repository's `wit/`), and `cargo package` makes a crate of it that builds for
//! wasm32-wasip2 from the package alone.

use std::path::Path;
use std::process::Command;

/// The files under `dir`, subdirectories included, by path relative to `dir` (`/`-separated),
/// with their bytes, sorted by path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, Vec<u8>)>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let name = format!(
                "{prefix}{}",
                path.file_name().expect("name").to_string_lossy()
            );
            if path.is_dir() {
                walk(&path, &format!("{name}/"), files);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                files.push((name, bytes));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files);
    files.sort();
    files
}

#[test]
fn the_sdk_carries_the_repository_wit_byte_for_byte() {
    let root = switchyard_tests::repo_root();
    let contract = files(&root.join("wit"));
    assert!(
        ["plugin.wit", "stateful/plugin.wit"]
            .iter()
            .all(|wanted| contract.iter().any(|(name, _)| name == wanted)),
        "{contract:?}"
    );
    let copy = files(&root.join("plugin-sdk/wit"));
    let names =
        |files: &[(String, Vec<u8>)]| files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&copy),
        names(&contract),
        "plugin-sdk/wit/ lists other files than wit/"
    );
    for ((name, ours), (_, theirs)) in copy.iter().zip(&contract) {
        assert!(
            ours == theirs,
            "plugin-sdk/wit/{name} differs from wit/{name}: copy it over (cp -r wit/. plugin-sdk/wit/)"
        );
    }
}

/// `cargo package` for the SDK, in the repository, with `args`: its stdout, or a panic with
/// its output.
fn cargo_package(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["package", "-p", "switchyard-plugin-sdk", "--allow-dirty"])
        .args(args)
        .current_dir(switchyard_tests::repo_root())
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cargo package {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_sdk_packages_with_its_wit_and_builds_from_the_package() {
    let listed = cargo_package(&["--list"]);
    let listed: Vec<&str> = listed.lines().collect();
    for file in [
        "wit/plugin.wit",
        "wit/stateful/plugin.wit",
        "src/lib.rs",
        "src/glue.rs",
        "Cargo.toml",
    ] {
        assert!(listed.contains(&file), "{file} is not packaged: {listed:?}");
    }
    // Verified for wasm32-wasip2, the one target that generates the bindings: cargo unpacks
    // the package and builds it alone, so the WIT it reads is the packaged copy.
    cargo_package(&["--target", "wasm32-wasip2"]);
}
