//! The service definitions shipped in packaging/ agree with the binary and with each other:
//! every command line they run parses, every config they name is shipped and valid, and every
//! path they create or condition on is the one the config uses. A renamed flag or moved file
//! fails here, not on a device.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey::config::Config;
use latchkey_common::exit::Code;

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(packaging(path)).unwrap_or_else(|e| panic!("packaging/{path}: {e}"))
}

/// The agent accepts these arguments (clap rejects an unknown flag before it prints help).
fn assert_cli_accepts(args: &[&str], origin: &str) {
    let out = Command::new(common::agent_bin()).args(args).arg("--help").output().expect("latchkey");
    assert!(
        out.status.success(),
        "{origin}: `latchkey {}` does not parse: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A shipped configuration, loaded and checked as the agent would.
fn shipped_config(path: &str) -> Config {
    let config = Config::load(&packaging(path)).unwrap_or_else(|e| panic!("packaging/{path}: {e}"));
    config.check().unwrap_or_else(|e| panic!("packaging/{path}: {e}"));
    config
}

/// `Key=value` lines of a unit file, every value of each key in order.
fn unit_keys(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with('[')) {
        if let Some((key, value)) = line.split_once('=') {
            keys.entry(key.to_owned()).or_default().push(value.to_owned());
        }
    }
    keys
}

#[test]
fn the_systemd_unit_matches_the_binary_the_package_and_the_config() {
    let unit = unit_keys(&read("systemd/latchkey.service"));
    let one = |key: &str| unit.get(key).and_then(|v| v.first()).cloned().unwrap_or_else(|| panic!("no {key}="));
    let exec = one("ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    // build-deb.sh installs the binary and the config where the unit looks for them.
    let deb = read("debian/build-deb.sh");
    assert_eq!(argv[0], "/usr/bin/latchkey");
    assert!(deb.contains("\"$P/usr/bin/latchkey\""), "the package does not install /usr/bin/latchkey");
    assert_cli_accepts(&argv[1..], "ExecStart");
    let config_path = argv.iter().skip_while(|a| **a != "--config").nth(1).expect("--config");
    assert_eq!(*config_path, "/etc/latchkey/config.toml");
    assert!(deb.contains("packaging/config.toml \"$P/etc/latchkey/config.toml\""), "the package ships another config");
    assert!(
        deb.contains("printf '/etc/latchkey/config.toml\\n' > \"$P/DEBIAN/conffiles\""),
        "the config is no conffile"
    );
    let config = shipped_config("config.toml");

    // The state directory systemd creates is the config's, and the start condition is the
    // identity file inside it.
    assert_eq!(config.state.dir, Path::new("/var/lib").join(one("StateDirectory")));
    assert_eq!(PathBuf::from(one("ConditionPathExists")), latchkey::identity::path(&config.state.dir));
    assert!(config.control.socket.starts_with(Path::new("/run").join(one("RuntimeDirectory"))));
    // Exit codes a restart cannot fix are exactly the ones the agent uses for that.
    let mut prevented: Vec<i32> =
        one("RestartPreventExitStatus").split_whitespace().map(|c| c.parse().expect("exit code")).collect();
    prevented.sort_unstable();
    let expected: Vec<i32> =
        [Code::Usage, Code::NotEnrolled, Code::IdentityUnusable, Code::Unmanaged].iter().map(|c| c.number()).collect();
    assert_eq!(prevented, expected);
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("KillMode"), "mixed", "SIGTERM must reach only the agent, which finishes its command");
    // The linux port fchowns the new /etc/shadow: the filter and the capabilities agree.
    assert!(unit["SystemCallFilter"].iter().any(|v| v == "@chown"), "@chown is filtered out");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_CHOWN");
    assert_eq!(one("ReadWritePaths"), "/etc");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID", "SIGHUP reloads the log level");
}

#[test]
fn the_aosp_init_script_blueprint_config_and_selinux_contexts_agree() {
    let rc = read("aosp/latchkey.rc");
    let bp = read("aosp/Android.bp");
    let service = rc.lines().find(|l| l.starts_with("service latchkey ")).expect("service line");
    let argv: Vec<&str> = service.split_whitespace().skip(2).collect();
    // Android.bp installs the binary and config on system_ext; the rc must run that binary.
    assert!(bp.contains("system_ext_specific: true"));
    assert!(
        bp.contains("init_rc: [\"latchkey.rc\"]")
            && bp.contains("src: \"config.toml\"")
            && bp.contains("sub_dir: \"latchkey\"")
    );
    assert_eq!(argv[0], "/system_ext/bin/latchkey");
    assert_cli_accepts(&argv[1..], "latchkey.rc");
    let config_path = argv.iter().skip_while(|a| **a != "--config").nth(1).expect("--config");
    assert_eq!(*config_path, "/system_ext/etc/latchkey/config.toml");
    let config = shipped_config("aosp/config.toml");
    // init creates the state directory the config uses, private to the service's user.
    let user = rc.lines().find_map(|l| l.trim().strip_prefix("user ")).expect("user");
    let mkdir = format!("mkdir {} 0700 {user} {user}", config.state.dir.display());
    assert!(rc.contains(&mkdir), "latchkey.rc does not `{mkdir}`");
    for path in [config.control.socket.as_path(), config.platform.bridge_socket.as_deref().expect("bridge")] {
        assert!(path.starts_with(&config.state.dir), "{} is outside the state directory", path.display());
    }
    let contexts = read("aosp/sepolicy/file_contexts");
    assert!(contexts.contains(&format!("{} ", argv[0])), "file_contexts does not label {}", argv[0]);
    assert!(contexts.contains(&format!("{}(/.*)?", config.state.dir.display())), "file_contexts misses the state dir");
}

#[test]
fn the_launchd_plist_runs_a_valid_command_with_the_shipped_config() {
    let plist = plist::Value::from_file(packaging("launchd/com.latchkey.agent.plist")).expect("plist");
    let dict = plist.as_dictionary().expect("dict");
    let args: Vec<&str> = dict
        .get("ProgramArguments")
        .and_then(plist::Value::as_array)
        .expect("ProgramArguments")
        .iter()
        .map(|v| v.as_string().expect("string"))
        .collect();
    assert_eq!(args[0], "/usr/local/bin/latchkey");
    assert_cli_accepts(&args[1..], "launchd plist");
    let config_path = args.iter().skip_while(|a| **a != "--config").nth(1).expect("--config");
    assert_eq!(Path::new(config_path).file_name(), Some(std::ffi::OsStr::new("config.toml")));
    let config = shipped_config("launchd/config.toml");
    assert_eq!(Path::new(config_path).parent(), config.server.ca.parent(), "the CA is not beside the config");
    assert_eq!(dict.get("Umask").and_then(plist::Value::as_signed_integer), Some(0o077));
}
