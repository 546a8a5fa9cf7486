use crate::settings::{load, Settings, SettingsError};

fn load_with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    load(&vars.to_vec(), None)
}

fn error(vars: &[(&str, &str)]) -> String {
    load_with(vars).unwrap_err().to_string()
}

#[test]
fn a_password_file_is_read_and_its_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "hunter2\n").unwrap();
    let path = path.to_str().unwrap();
    let s = load_with(&[("REDIS_PASSWORD_FILE", path)]).unwrap();
    assert_eq!(
        s.redis.connection.redis_settings().password(),
        Some("hunter2")
    );
    let s = load_with(&[
        ("REDIS_URL", "redis://u@h:1/0"),
        ("REDIS_PASSWORD_FILE", path),
    ]);
    assert!(s.is_err(), "a URL user without a password stays refused");
    let s = load_with(&[
        ("REDIS_URL", "redis://h:1/0"),
        ("REDIS_PASSWORD_FILE", path),
    ])
    .unwrap();
    assert_eq!(
        s.redis.connection.redis_settings().password(),
        Some("hunter2")
    );
}

#[test]
fn a_secret_and_its_file_together_are_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "hunter2").unwrap();
    let path = path.to_str().unwrap();
    let err = error(&[("REDIS_PASSWORD", "x"), ("REDIS_PASSWORD_FILE", path)]);
    assert!(err.contains("REDIS_PASSWORD_FILE"), "{err}");
    assert!(err.contains("without REDIS_PASSWORD"), "{err}");
    let err = error(&[
        ("REDIS_URL", "redis://:x@h:1/0"),
        ("REDIS_PASSWORD_FILE", path),
    ]);
    assert!(err.contains("REDIS_PASSWORD_FILE"), "{err}");
    let err = error(&[
        ("REDIS_SENTINELS", "h:26379"),
        ("REDIS_SENTINEL_MASTER", "m"),
        ("REDIS_SENTINEL_PASSWORD", "x"),
        ("REDIS_SENTINEL_PASSWORD_FILE", path),
    ]);
    assert!(err.contains("REDIS_SENTINEL_PASSWORD_FILE"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn unreadable_or_empty_secret_files_are_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = error(&[("REDIS_PASSWORD_FILE", missing.to_str().unwrap())]);
    assert!(err.contains("REDIS_PASSWORD_FILE"), "{err}");
    assert!(err.contains("a readable file"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let err = error(&[("REDIS_PASSWORD_FILE", empty.to_str().unwrap())]);
    assert!(err.contains("non-empty"), "{err}");
}

#[test]
fn client_certificate_and_key_come_together_and_only_with_tls() {
    let err = error(&[
        ("REDIS_URL", "rediss://h:1/0"),
        ("REDIS_TLS_CERT_FILE", "/c.pem"),
    ]);
    assert!(err.contains("REDIS_TLS_CERT_FILE"), "{err}");
    assert!(err.contains("together with REDIS_TLS_KEY_FILE"), "{err}");
    let err = error(&[
        ("REDIS_URL", "rediss://h:1/0"),
        ("REDIS_TLS_KEY_FILE", "/k.pem"),
    ]);
    assert!(err.contains("together with REDIS_TLS_CERT_FILE"), "{err}");
    let err = error(&[
        ("REDIS_TLS_CERT_FILE", "/c.pem"),
        ("REDIS_TLS_KEY_FILE", "/k.pem"),
    ]);
    assert!(err.contains("only with a rediss://"), "{err}");
}

#[test]
fn sentinels_replace_the_address() {
    let s = load_with(&[
        ("REDIS_SENTINELS", "a:26379,b:26380"),
        ("REDIS_SENTINEL_MASTER", "mymaster"),
        ("REDIS_SENTINEL_PASSWORD", "hunter2"),
    ])
    .unwrap();
    let sentinel = s.redis.sentinel.as_ref().unwrap();
    assert_eq!(sentinel.nodes.len(), 2);
    assert_eq!(sentinel.master, "mymaster");
    assert_eq!(s.redis.display_addr(), "sentinel:mymaster");
    assert!(!format!("{:?}", s.redis).contains("hunter2"));
    for (var, value) in [
        ("REDIS_URL", "redis://h:1/0"),
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", "6379"),
    ] {
        let err = error(&[
            ("REDIS_SENTINELS", "a:26379"),
            ("REDIS_SENTINEL_MASTER", "m"),
            (var, value),
        ]);
        assert!(err.contains(var), "{err}");
        assert!(err.contains("REDIS_SENTINELS"), "{err}");
    }
    let err = error(&[("REDIS_SENTINELS", "a:26379")]);
    assert!(err.contains("REDIS_SENTINEL_MASTER"), "{err}");
    let err = error(&[("REDIS_SENTINEL_MASTER", "m")]);
    assert!(err.contains("only with REDIS_SENTINELS"), "{err}");
    let err = error(&[("REDIS_SENTINELS", "nope"), ("REDIS_SENTINEL_MASTER", "m")]);
    assert!(err.contains("host:port"), "{err}");
}

#[test]
fn replica_acknowledgement_is_opt_in() {
    assert!(load_with(&[]).unwrap().redis.replica_ack.is_none());
    let s = load_with(&[
        ("REDIS_MIN_REPLICAS_ACK", "1"),
        ("REDIS_MIN_REPLICAS_TIMEOUT", "0.25"),
    ])
    .unwrap();
    let ack = s.redis.replica_ack.unwrap();
    assert_eq!(ack.replicas.get(), 1);
    assert_eq!(ack.timeout, std::time::Duration::from_millis(250));
    let err = error(&[("REDIS_MIN_REPLICAS_ACK", "0")]);
    assert!(err.contains("REDIS_MIN_REPLICAS_ACK"), "{err}");
}

#[test]
fn tls_flag_turns_tls_on_for_host_and_port() {
    let s = load_with(&[("REDIS_TLS", "true")]).unwrap();
    assert!(matches!(
        s.redis.connection.addr(),
        redis::ConnectionAddr::TcpTls { .. }
    ));
    let err = error(&[("REDIS_TLS", "yes")]);
    assert!(err.contains("REDIS_TLS"), "{err}");
    let err = error(&[("REDIS_TLS", "true"), ("REDIS_URL", "redis://h:1/0")]);
    assert!(err.contains("REDIS_TLS"), "{err}");
}
