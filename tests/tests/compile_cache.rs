//! The compiled-plugin cache: a second engine finds what the first compiled; a damaged entry
//! is compiled again, never trusted.

use switchyard::plugin::{
    ChainRunner, ChainSpec, EngineConfig, HostServices, PluginEngine, StageSpec,
};
use switchyard_tests::pipelines::scratch_dir;
use switchyard_tests::{plugin_bytes, record};

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Loads `plugin` with a fresh engine on `cache`, runs one urgent record through it, and
/// returns the route it took.
fn load_and_run(cache: &std::path::Path, plugin: &str) -> String {
    let engine = PluginEngine::new(&EngineConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..EngineConfig::default()
    })
    .expect("engine");
    let module = engine.load(&plugin_bytes(plugin)).expect("loads");
    let spec = ChainSpec::new(
        "p",
        vec!["standard".into(), "urgent".into(), "errors".into()],
        "standard",
        vec![StageSpec {
            name: "route".into(),
            module,
            config: Vec::new(),
            limits: Default::default(),
        }],
    )
    .expect("spec");
    let spec = std::sync::Arc::new(spec);
    let mut runner =
        ChainRunner::new(engine, spec.clone(), HostServices::default()).expect("instantiates");
    let out = runner
        .process("t", 0, vec![record(0, r#"{"priority":"high"}"#)])
        .expect("runs");
    match &out[0].destination {
        switchyard::plugin::Destination::Route { route, .. } => spec.route_name(*route).to_owned(),
        other => panic!("not routed: {other:?}"),
    }
}

#[test]
fn a_second_engine_uses_the_cache_and_a_damaged_entry_is_recompiled() {
    let cache = scratch_dir("compile-cache");
    assert_eq!(load_and_run(&cache, "route"), "urgent");
    let written = files(&cache);
    let entry = written
        .iter()
        .find(|f| f.extension().is_none())
        .unwrap_or_else(|| panic!("nothing cached in {}: {written:?}", cache.display()))
        .clone();
    // Hit: works, and writes nothing new.
    assert_eq!(load_and_run(&cache, "route"), "urgent");
    assert_eq!(files(&cache).len(), written.len());

    // Proof that the entry is what gets loaded: put the `noop` plugin's compiled code in
    // the `route` entry's place, and `route` behaves like `noop` (the record passes to the
    // default route). Only a test does this to its own cache directory.
    let other = scratch_dir("compile-cache-noop");
    assert_eq!(load_and_run(&other, "noop"), "standard");
    let noop_entry = files(&other)
        .into_iter()
        .find(|f| f.extension().is_none())
        .expect("noop cached");
    std::fs::copy(&noop_entry, &entry).expect("swap the entry");
    assert_eq!(
        load_and_run(&cache, "route"),
        "standard",
        "the cache was not read"
    );

    // Damaged: the entry is garbage. The load compiles again and works.
    std::fs::write(&entry, b"not a compiled artifact").expect("damage");
    assert_eq!(load_and_run(&cache, "route"), "urgent");
}
