//! `docker-compose.yml` configures the daemon only through real settings: every variable it
//! sets (an upper-case key under a service's `environment`) is a known `REDIS_*` setting, or
//! `RUST_LOG`. A misspelt one would be ignored by the daemon (with at most a warning), and the
//! stack would silently run on a default.

use batch_processor::settings::{env_name, KNOWN_KEYS};

/// The compose file as shipped.
fn compose_file() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    std::fs::read_to_string(path).unwrap()
}

/// Every `NAME: value` key in `yaml` whose name is an environment variable's (compose's own
/// keys are lower case), with its line number.
fn variables_set(yaml: &str) -> Vec<(usize, String)> {
    yaml.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split('#').next()?.trim_start();
            let (key, _) = line.split_once(':')?;
            let is_var = key.starts_with(|c: char| c.is_ascii_uppercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_var.then(|| (i + 1, key.to_string()))
        })
        .collect()
}

fn is_setting(var: &str) -> bool {
    var == "RUST_LOG" || KNOWN_KEYS.iter().any(|k| env_name(k) == var)
}

#[test]
fn every_variable_the_compose_file_sets_is_a_real_setting() {
    let yaml = compose_file();
    let vars = variables_set(&yaml);
    let names: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
    // The scan must see the daemon's settings, or this test would pass on nothing.
    for expected in [
        "REDIS_HOST",
        "REDIS_RAW_DATA_QUEUE",
        "REDIS_HTTP_ADDR",
        "RUST_LOG",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not found in {names:?}"
        );
    }
    let unknown: Vec<String> = vars
        .iter()
        .filter(|(_, v)| !is_setting(v))
        .map(|(line, v)| format!("docker-compose.yml:{line}: {v}"))
        .collect();
    assert_eq!(unknown, Vec::<String>::new(), "not settings of the daemon");
}

#[test]
fn the_scan_catches_a_misspelt_variable() {
    let yaml = "services:\n  x:\n    environment:\n      REDIS_BATCH_SIZE: \"10\"\n      REDIS_BACTH_SIZE: \"10\"  # typo\n      RUST_LOG: info\n";
    let vars = variables_set(yaml);
    let bad: Vec<&str> = vars
        .iter()
        .map(|(_, v)| v.as_str())
        .filter(|v| !is_setting(v))
        .collect();
    assert_eq!(bad, ["REDIS_BACTH_SIZE"]);
    assert_eq!(vars.len(), 3);
}
