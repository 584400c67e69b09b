//! Building a sibling binary (the `latchkey-server` the demo and the tests start) with the cargo
//! that built the running one.
use std::process::Command;

/// `cargo build --quiet -p PACKAGE --bin PACKAGE [--release]`, without the variables cargo set
/// for the running crate: build scripts that read them (ring's reads `CARGO_MANIFEST_DIR`) would
/// see a change, and the nested build and the next outer one would each rebuild half the tree.
pub fn build(cargo: &str, package: &str, release: bool) -> Command {
    let mut build = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_for_a_crate) {
            build.env_remove(key);
        }
    }
    build.args(["build", "--quiet", "-p", package, "--bin", package]);
    if release {
        build.arg("--release");
    }
    build
}

/// The variables cargo sets for the crate it runs (as opposed to the user's own `CARGO_*`
/// configuration, which a nested build must keep).
fn set_by_cargo_for_a_crate(key: &str) -> bool {
    [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_BIN_",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cargo_run_variables_are_dropped_and_the_users_configuration_kept() {
        assert!(super::set_by_cargo_for_a_crate("CARGO_MANIFEST_DIR"));
        assert!(super::set_by_cargo_for_a_crate("CARGO_PKG_VERSION"));
        assert!(!super::set_by_cargo_for_a_crate("CARGO_TARGET_DIR"));
        assert!(!super::set_by_cargo_for_a_crate("CARGO_HOME"));
    }
}
