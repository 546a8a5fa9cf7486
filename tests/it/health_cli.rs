//! `batch-processor health`, the image's HEALTHCHECK, run as the built binary beside a real
//! daemon on a non-default `REDIS_HTTP_ADDR`: it asks the address the settings name (the
//! first container run found the check hard-coded to port 9464), tells liveness from
//! readiness, and fails fast when nothing answers.

use std::time::Duration;

use crate::harness::*;

/// `health` (plus `args`) with the daemon's settings.
fn health(env: &[(String, String)], args: &[&str]) -> CliOutput {
    let mut all = vec!["health"];
    all.extend_from_slice(args);
    start_cli(env, &all).finish(Duration::from_secs(10))
}

#[test]
fn health_follows_the_http_address_and_tells_live_from_ready() {
    let server = RedisServer::start();
    let names = Names::new();
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let _daemon = start_daemon(&server, &names, &[("REDIS_HTTP_ADDR", &addr)]);
    let env = env_with(&server, &names, &[("REDIS_HTTP_ADDR", &addr)]);
    assert!(
        wait_until(Duration::from_secs(10), || health(&env, &["--ready"]).code
            == Some(0)),
        "never ready"
    );
    let live = health(&env, &[]);
    assert_eq!(live.code, Some(0), "stderr: {}", live.stderr);
    assert_eq!(
        live.stdout.trim(),
        format!("http://127.0.0.1:{port}/healthz: 200 ok")
    );

    // Redis stops answering: not ready within the probe's 2 s, yet still alive.
    server.pause();
    let unready = wait_until(Duration::from_secs(5), || {
        health(&env, &["--ready"]).code == Some(1)
    });
    let not_ready = health(&env, &["--ready"]);
    let live = health(&env, &[]);
    server.resume();
    assert!(unready, "still ready with Redis stopped");
    assert!(
        not_ready.stderr.contains(&format!(
            "http://127.0.0.1:{port}/readyz answered 503: not ready: redis unreachable"
        )),
        "stderr: {}",
        not_ready.stderr
    );
    assert_eq!(live.code, Some(0), "liveness: {}", live.stderr);
}

#[test]
fn health_fails_fast_when_nothing_answers_or_probes_are_off() {
    let port = free_port();
    let env: Vec<(String, String)> = vec![("REDIS_HTTP_ADDR".into(), format!("127.0.0.1:{port}"))];
    let out = health(&env, &[]);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(3),
        "took {:?}",
        out.elapsed
    );
    assert!(
        out.stderr
            .contains(&format!("no answer from http://127.0.0.1:{port}/healthz")),
        "stderr: {}",
        out.stderr
    );
    let off: Vec<(String, String)> = vec![("REDIS_HTTP_ADDR".into(), "off".into())];
    let out = health(&off, &["--ready"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("REDIS_HTTP_ADDR is off"),
        "{}",
        out.stderr
    );
    let bad: Vec<(String, String)> = vec![("REDIS_HTTP_ADDR".into(), "nowhere".into())];
    assert_eq!(health(&bad, &[]).code, Some(2), "a bad setting exits 2");
}
