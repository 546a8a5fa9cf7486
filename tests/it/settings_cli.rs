//! Settings: a bad setting exits 2 before touching Redis, with one stderr line naming the
//! variable and the value; secrets are never printed; unknown `REDIS_*` variables are
//! ignored; `check-config` prints the effective settings with the password redacted.

use std::time::Duration;

use crate::harness::*;

const PASSWORD: &str = "pw-Zq81-never-print-me";

/// The environment of a daemon pointed at a port where nothing listens: a process that
/// touched Redis would keep retrying instead of exiting at once.
fn nowhere_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let port = free_port().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("REDIS_PORT".into(), port),
        ("REDIS_HTTP_ADDR".into(), "off".into()),
        ("REDIS_RETRY_MAX_DELAY".into(), "0.5".into()),
    ];
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Run with `env` and `args`; assert exit 2 within 5 s and return the stderr lines.
fn expect_exit_2(env: &[(String, String)], args: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut d = spawn_daemon(env, args);
    let code = d.wait_timeout(Duration::from_secs(5));
    // Let the pump threads read the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let stderr = d.stderr.lock().unwrap().clone();
    let stdout = d.lines.lock().unwrap().clone();
    assert_eq!(
        code,
        Some(2),
        "env {env:?} args {args:?}: expected exit 2; stderr {stderr:?} stdout {stdout:?}"
    );
    (stderr, stdout)
}

#[test]
fn each_kind_of_bad_setting_exits_2_naming_the_variable_and_value() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("REDIS_BATCH_SIZE", "abc", &[]),
        ("REDIS_BATCH_SIZE", "0", &["run"]),
        ("REDIS_BATCH_SIZE", "-3", &[]),
        ("REDIS_PORT", "70000", &["run"]),
        ("REDIS_PROCESSING_TIMEOUT", "-1", &[]),
        ("REDIS_PROCESSING_TIMEOUT", "soon", &["run"]),
        ("REDIS_LOG_FORMAT", "xml", &[]),
        ("REDIS_DB", "x", &["run"]),
        ("REDIS_LEASE_TTL", "0.1", &[]),
        ("REDIS_URL", "http://127.0.0.1:6379/0", &["run"]),
        ("REDIS_MAX_JSON_DEPTH", "125", &[]),
        ("REDIS_STUCK_AFTER", "0", &["run"]),
        ("REDIS_PROTO_MAX_BULK_LEN", "1000", &[]),
        ("REDIS_MAX_BATCH_BYTES", "0", &["run"]),
        ("REDIS_MAX_BATCHES_PER_SECOND", "0", &[]),
        ("REDIS_MAX_BATCHES_PER_SECOND", "fast", &["run"]),
        ("REDIS_BATCH_BURST", "3", &[]),
        ("REDIS_RAW_DATA_QUEUE", "urgent,,bulk", &["run"]),
        ("REDIS_RAW_DATA_QUEUE", "urgent,bulk,urgent", &[]),
        ("REDIS_RAW_DATA_QUEUE", "urgent, bulk", &["run"]),
        ("REDIS_RAW_DATA_QUEUE", "urgent,processing_queue", &[]),
        ("REDIS_MAX_INFLIGHT_BYTES", "lots", &["run"]),
        ("REDIS_MAX_INFLIGHT_BYTES", "1000", &[]),
        // Less than twice the default REDIS_MAX_MESSAGE_BYTES (1048576).
        ("REDIS_MAX_INFLIGHT_BYTES", "2000000", &["run"]),
    ];
    for (var, value, args) in cases {
        // A password is set in every case and must never be printed.
        let env = nowhere_env(&[(var, value), ("REDIS_PASSWORD", PASSWORD)]);
        let (stderr, stdout) = expect_exit_2(&env, args);
        let lines: Vec<&String> = stderr.iter().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{var}={value}: expected one stderr line, got {stderr:?}"
        );
        assert!(
            lines[0].contains(var),
            "{var}={value}: line does not name the variable: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(value),
            "{var}={value}: line does not show the value: {}",
            lines[0]
        );
        let all = format!("{stderr:?}{stdout:?}");
        assert!(
            !all.contains(PASSWORD),
            "{var}={value}: password printed: {all}"
        );
    }
}

#[test]
fn a_bad_url_exits_2_without_printing_its_password() {
    for url in [
        format!("http://user:{PASSWORD}@127.0.0.1:6379/0"),
        format!("redis://user:{PASSWORD}@127.0.0.1:notaport/0"),
        format!("ftp://{PASSWORD}@127.0.0.1/"),
    ] {
        let env = nowhere_env(&[("REDIS_URL", &url)]);
        let (stderr, stdout) = expect_exit_2(&env, &["run"]);
        let lines: Vec<&String> = stderr.iter().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{url}: expected one stderr line, got {stderr:?}"
        );
        assert!(lines[0].contains("REDIS_URL"), "{}", lines[0]);
        let all = format!("{stderr:?}{stdout:?}");
        assert!(!all.contains(PASSWORD), "password printed: {all}");
    }
}

#[test]
fn unknown_redis_variables_are_ignored() {
    let server = RedisServer::start();
    let names = Names::new();
    let mut c = server.conn();
    let mut d = start_daemon(
        &server,
        &names,
        &[
            ("REDIS_SOMETHING_THE_SCRAPER_USES", "whatever"),
            ("REDIS_BATCH_SIZ", "x"), // typo: not a setting, so not validated
            ("REDIS_TRANSFORMER_MODE", "-1"),
        ],
    );
    push_all(&mut c, &names.source, &workload(10, 0, 100).messages);
    // The default batch size (10) applies: one full envelope.
    assert!(
        wait_until(Duration::from_secs(10), || llen(&mut c, &names.processing)
            == 1),
        "daemon with unknown REDIS_* variables did not move a full batch; output:\n{}",
        d.all_output()
    );
    assert_eq!(
        envelopes(&mut c, &names.processing)[0]["payload"]["size"],
        10
    );
    assert!(d.is_running());
    d.terminate_ok();
}

#[test]
fn check_config_prints_effective_settings_with_the_password_redacted() {
    let env = nowhere_env(&[
        ("REDIS_BATCH_SIZE", "37"),
        ("REDIS_RAW_DATA_QUEUE", "my_source"),
        ("REDIS_PASSWORD", PASSWORD),
        ("REDIS_USERNAME", "alice"),
    ]);
    let mut d = spawn_daemon(&env, &["check-config"]);
    let code = d.wait_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    let out = d.all_output();
    assert_eq!(code, Some(0), "{out}");
    let stdout = d.lines.lock().unwrap().join("\n");
    assert!(stdout.contains("REDIS_BATCH_SIZE=37"), "{stdout}");
    assert!(stdout.contains("my_source"), "{stdout}");
    assert!(stdout.contains("REDIS_PASSWORD"), "{stdout}");
    assert!(stdout.contains("REDIS_PROCESSING_TIMEOUT"), "{stdout}");
    assert!(!out.contains(PASSWORD), "password printed: {out}");

    let url = format!("redis://alice:{PASSWORD}@127.0.0.1:6379/2");
    let mut d = spawn_daemon(&nowhere_env(&[("REDIS_URL", &url)]), &["check-config"]);
    let code = d.wait_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    let out = d.all_output();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("REDIS_URL"), "{out}");
    assert!(!out.contains(PASSWORD), "password printed: {out}");
}

#[test]
fn check_config_exits_2_on_a_bad_setting() {
    let env = nowhere_env(&[("REDIS_BATCH_SIZE", "0"), ("REDIS_PASSWORD", PASSWORD)]);
    let (stderr, stdout) = expect_exit_2(&env, &["check-config"]);
    let lines: Vec<&String> = stderr.iter().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr:?}");
    assert!(
        lines[0].contains("REDIS_BATCH_SIZE") && lines[0].contains('0'),
        "{}",
        lines[0]
    );
    assert!(!format!("{stderr:?}{stdout:?}").contains(PASSWORD));
}
