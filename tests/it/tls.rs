//! `rediss://` end to end: a TLS-only redis-server with a private CA made here with openssl,
//! and the daemon trusting that CA through REDIS_TLS_CA_FILE.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

#[test]
fn the_daemon_moves_messages_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let redis = start_tls_redis(dir.path());
    let names = Names::new();
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let ca = dir.path().join("ca.pem").display().to_string();
    let env: Vec<(String, String)> = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_TLS_CA_FILE", ca.as_str()),
        ("REDIS_RAW_DATA_QUEUE", &names.source),
        ("REDIS_PROCESSING_QUEUE", &names.processing),
        ("REDIS_DEAD_LETTER_QUEUE", &names.dead_letter),
        ("REDIS_KEY_PREFIX", &names.key_prefix),
        ("REDIS_HTTP_ADDR", "off"),
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_PROCESSING_TIMEOUT", "0.2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // Without the private CA the server's certificate is not trusted.
    let untrusting: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "REDIS_TLS_CA_FILE")
        .cloned()
        .collect();
    let out = run_cli(&untrusting, &["status", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // The CLI speaks TLS too: the queues start empty.
    let out = run_cli(&env, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["queues"]["sources"][0]["length"], 0);

    let mut daemon = spawn_daemon(&env, &[]);
    assert!(daemon.wait_for_line("lease acquired", Duration::from_secs(10)));
    // Produce through the daemon's own TLS path: replay puts messages on the source.
    let records: Vec<String> = (0..25)
        .map(|i| {
            serde_json::json!({
                "reason": "test",
                "raw": String::from_utf8(event(i, 120)).unwrap(),
                "source_queue": names.source,
                "failed_at": "2026-01-01T00:00:00.000000+00:00",
            })
            .to_string()
        })
        .collect();
    // Seed the dead-letter list over TLS with redis-cli, then replay it onto the source.
    let mut cli = Command::new("redis-cli");
    cli.args(["--tls", "--cacert"])
        .arg(dir.path().join("ca.pem"))
        .args(["-h", "127.0.0.1", "-p"])
        .arg(redis.port.to_string())
        .arg("LPUSH")
        .arg(&names.dead_letter);
    for r in &records {
        cli.arg(r);
    }
    let pushed = cli.output().expect("redis-cli");
    assert!(pushed.status.success(), "{pushed:?}");
    let out = run_cli(&env, &["dlq", "replay"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let done = wait_until(Duration::from_secs(10), || {
        let out = run_cli(&env, &["status", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        s["totals"]["messages"] == 25 && s["queues"]["sources"][0]["length"] == 0
    });
    daemon.terminate_ok();
    assert!(done, "the daemon did not move the 25 messages over TLS");
}

#[test]
fn a_ca_file_that_holds_no_certificate_is_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    for (name, content) in [
        (
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
                .to_string(),
        ),
        (
            "key.pem",
            std::fs::read_to_string(dir.path().join("server.key")).unwrap(),
        ),
        ("empty.pem", String::new()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let env = vec![
            (
                "REDIS_URL".to_string(),
                format!("rediss://127.0.0.1:{}/", free_port()),
            ),
            ("REDIS_TLS_CA_FILE".to_string(), path.display().to_string()),
        ];
        for args in [&["check-config"][..], &["run"][..]] {
            let out = run_cli(&env, args);
            assert_eq!(out.code, Some(2), "{name} {args:?}: {}", out.stderr);
            assert!(out.stderr.contains("REDIS_TLS_CA_FILE"), "{}", out.stderr);
        }
    }
}

#[test]
fn a_ca_file_without_a_tls_url_is_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let env = vec![
        ("REDIS_PORT".to_string(), free_port().to_string()),
        ("REDIS_TLS_CA_FILE".to_string(), ca.display().to_string()),
    ];
    let out = run_cli(&env, &["check-config"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("REDIS_TLS_CA_FILE"), "{}", out.stderr);
}

/// mTLS: a server that requires client certificates (`--tls-auth-clients yes`) refuses the
/// daemon without REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE, and with them the daemon moves
/// messages and the operator commands work. The password comes from REDIS_PASSWORD_FILE.
#[test]
fn the_daemon_moves_messages_with_a_client_certificate_and_a_password_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let redis = start_tls_redis_with(dir.path(), true);
    let names = Names::new();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut admin = connect_tls(dir.path(), redis.port);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("from-a-file-77")
        .query(&mut admin)
        .unwrap();
    std::fs::write(dir.path().join("password"), "from-a-file-77\n").unwrap();
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let base: Vec<(String, String)> = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_TLS_CA_FILE", &path("ca.pem")),
        ("REDIS_PASSWORD_FILE", &path("password")),
        ("REDIS_RAW_DATA_QUEUE", &names.source),
        ("REDIS_PROCESSING_QUEUE", &names.processing),
        ("REDIS_DEAD_LETTER_QUEUE", &names.dead_letter),
        ("REDIS_KEY_PREFIX", &names.key_prefix),
        ("REDIS_HTTP_ADDR", "off"),
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_PROCESSING_TIMEOUT", "0.2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // Without a client certificate the handshake is refused.
    let out = run_cli(&base, &["status", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let mut env = base.clone();
    env.push(("REDIS_TLS_CERT_FILE".into(), path("client.pem")));
    env.push(("REDIS_TLS_KEY_FILE".into(), path("client.key")));
    let w = workload(25, 0, 120);
    push_all(&mut admin, &names.source, &w.messages);
    let mut daemon = spawn_daemon(&env, &[]);
    let done = wait_until(Duration::from_secs(10), || {
        let out = run_cli(&env, &["status", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        s["totals"]["messages"] == 25 && s["queues"]["sources"][0]["length"] == 0
    });
    daemon.terminate_ok();
    assert!(done, "the daemon did not move the 25 messages over mTLS");
    assert!(
        !daemon.all_output().contains("from-a-file-77"),
        "the password was printed"
    );
    assert_accounted(&outcome(&mut admin, &names), &w, &names, true, true);
}

#[test]
fn a_client_key_that_does_not_match_its_certificate_is_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let env = vec![
        (
            "REDIS_URL".to_string(),
            format!("rediss://127.0.0.1:{}/", free_port()),
        ),
        ("REDIS_TLS_CERT_FILE".to_string(), path("client.pem")),
        ("REDIS_TLS_KEY_FILE".to_string(), path("server.key")),
    ];
    let out = run_cli(&env, &["check-config"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("REDIS_TLS_KEY_FILE"), "{}", out.stderr);
}
