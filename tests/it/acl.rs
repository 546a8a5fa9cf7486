//! The least-privilege ACL users documented in the README, applied as written (read from the
//! README itself, so the documentation cannot drift from what is tested) on a server whose
//! default user is off.

use std::time::Duration;

use crate::harness::*;

const DAEMON_PW: &str = "daemon-acl-pw-31";
const OPS_PW: &str = "ops-acl-pw-47";

/// A server with the default user off and an `admin` user that may do anything.
fn server() -> (RedisServer, redis::Connection) {
    let server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--user",
        "admin",
        "on",
        ">admin-pw",
        "~*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ]);
    let admin = server.conn_auth(Some("admin"), "admin-pw");
    (server, admin)
}

/// The `ACL SETUSER` rule under `<!-- acl:{marker} -->` in the README, placeholders filled in
/// for `names`: the user name and its rules.
fn documented_rule(marker: &str, names: &Names, password: &str) -> (String, Vec<String>) {
    let readme = include_str!("../../README.md");
    let tag = format!("<!-- acl:{marker} -->");
    let after = &readme[readme
        .find(&tag)
        .expect("the README documents the ACL rule")..];
    let block = after
        .split("```")
        .nth(1)
        .expect("a code block after the marker");
    let filled = block
        .replace("<source>", &names.source)
        .replace("<processing>", &names.processing)
        .replace("<dead_letter>", &names.dead_letter)
        .replace("<prefix>", &names.key_prefix)
        .replace("<password>", password);
    let mut tokens = filled.split_whitespace().map(str::to_string);
    assert_eq!(tokens.next().as_deref(), Some("ACL"));
    assert_eq!(tokens.next().as_deref(), Some("SETUSER"));
    let user = tokens.next().expect("a user name");
    (user, tokens.collect())
}

fn apply(admin: &mut redis::Connection, user: &str, rules: &[String]) {
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    acl_setuser(admin, user, &rules);
}

/// `ACL LOG` entries (user, object) for the users of this test, except the two refusals the
/// README calls harmless: the `CLIENT SETINFO` redis-rs sends on connecting, and the
/// daemon's `CONFIG GET proto-max-bulk-len` (it falls back to REDIS_PROTO_MAX_BULK_LEN).
fn denials(admin: &mut redis::Connection, users: &[&str]) -> Vec<(String, String)> {
    let log: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(admin).unwrap();
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    log.iter()
        .map(|e| (text(e.get("username")), text(e.get("object"))))
        .filter(|(user, object)| {
            users.contains(&user.as_str())
                && !["client|setinfo", "config|get"].contains(&object.as_str())
        })
        .collect()
}

fn as_user(
    server: &RedisServer,
    names: &Names,
    user: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut settings = vec![("REDIS_USERNAME", user), ("REDIS_PASSWORD", password)];
    settings.extend_from_slice(extra);
    env_with(server, names, &settings)
}

/// The documented daemon user moves messages (good ones into envelopes, bad ones into dead
/// letters, exactly once), and the documented operator user runs `status`, `dlq list`,
/// `dlq replay` and `dlq purge`; Redis refuses nothing either of them does.
#[test]
fn the_documented_acl_users_run_the_daemon_and_the_operator_commands() {
    let (server, mut admin) = server();
    let names = Names::new();
    let (daemon_user, daemon_rules) = documented_rule("daemon", &names, DAEMON_PW);
    let (ops_user, ops_rules) = documented_rule("operator", &names, OPS_PW);
    apply(&mut admin, &daemon_user, &daemon_rules);
    apply(&mut admin, &ops_user, &ops_rules);
    let w = workload(60, 10, 100);
    push_all(&mut admin, &names.source, &w.messages);

    let daemon_env = as_user(
        &server,
        &names,
        &daemon_user,
        DAEMON_PW,
        &[
            ("REDIS_BATCH_SIZE", "10"),
            ("REDIS_PROCESSING_TIMEOUT", "0.2"),
            ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
        ],
    );
    let mut d = spawn_daemon(&daemon_env, &[]);
    assert!(
        wait_drained(&mut admin, &names, Duration::from_secs(10)),
        "the daemon did not drain the source under its ACL user:\n{}",
        d.all_output()
    );
    let ops = as_user(&server, &names, &ops_user, OPS_PW, &[]);
    let status = wait_until(Duration::from_secs(5), || {
        let out = run_cli(&ops, &["status", "--json"]);
        let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        out.code == Some(0)
            && s["totals"]["messages"] == w.good.len()
            && s["totals"]["dead_letters"] == w.bad.len()
    });
    let out = run_cli(&ops, &["status", "--json"]);
    assert!(status, "{} {}", out.stdout, out.stderr);
    d.terminate_ok();
    let refused: Vec<String> = problem_lines(&d)
        .into_iter()
        .filter(|l| l.contains("\"error_kind\""))
        .collect();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    assert_accounted(&outcome(&mut admin, &names), &w, &names, true, true);

    let out = run_cli(&ops, &["dlq", "list"]);
    assert_eq!(out.code, Some(0), "dlq list: {}", out.stderr);
    let out = run_cli(&ops, &["dlq", "replay", "--limit", "4"]);
    assert_eq!(out.code, Some(0), "dlq replay: {}", out.stderr);
    assert_eq!(llen(&mut admin, &names.source), 4);
    let out = run_cli(&ops, &["dlq", "purge", "--yes"]);
    assert_eq!(out.code, Some(0), "dlq purge: {}", out.stderr);
    assert_eq!(llen(&mut admin, &names.dead_letter), 0);
    assert_eq!(
        denials(&mut admin, &[&daemon_user, &ops_user]),
        Vec::<(String, String)>::new(),
        "Redis refused something the documented users did"
    );
}

/// Without one permission the failure names it: the daemon without `+lrange` logs
/// `redis refused` (error_kind `no_perm`) naming the command and keeps running with the
/// messages still in the source; `status` without `+zrange` exits 1 naming it.
#[test]
fn a_user_missing_one_permission_gets_an_error_naming_it() {
    let (server, mut admin) = server();
    let names = Names::new();
    let (daemon_user, mut daemon_rules) = documented_rule("daemon", &names, DAEMON_PW);
    let (ops_user, mut ops_rules) = documented_rule("operator", &names, OPS_PW);
    daemon_rules.retain(|r| r != "+lrange");
    ops_rules.retain(|r| r != "+zrange");
    apply(&mut admin, &daemon_user, &daemon_rules);
    apply(&mut admin, &ops_user, &ops_rules);
    push_all(&mut admin, &names.source, &workload(10, 0, 100).messages);

    let env = as_user(&server, &names, &daemon_user, DAEMON_PW, &[]);
    let mut d = spawn_daemon(&env, &[]);
    let named = |d: &Daemon| {
        problem_lines(d)
            .into_iter()
            .any(|l| l.contains("redis refused") && l.contains("no_perm") && l.contains("'lrange'"))
    };
    assert!(
        wait_until(Duration::from_secs(10), || named(&d)),
        "no error line naming the missing permission:\n{}",
        d.all_output()
    );
    assert!(d.is_running(), "{}", d.all_output());
    assert!(!d.all_output().contains(DAEMON_PW), "password printed");
    assert_eq!(llen(&mut admin, &names.source), 10);
    d.terminate_ok();

    let ops = as_user(&server, &names, &ops_user, OPS_PW, &[]);
    let out = run_cli(&ops, &["status"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("'zrange'"), "{}", out.stderr);
    assert!(!out.stderr.contains(OPS_PW), "{}", out.stderr);
}

const TRANSFORMER_PW: &str = "transformer-acl-pw-59";

/// With the batch ledger: the documented daemon user plus its ledger rule moves messages and
/// writes ledger entries, and the documented transformer user claims and acks them with
/// `demo consume`; Redis refuses nothing either does.
#[test]
fn the_documented_ledger_rules_run_the_daemon_and_a_transformer() {
    let (server, mut admin) = server();
    let names = Names::new();
    let state_prefix = format!("{}:state:", names.key_prefix);
    let fill = |rules: Vec<String>| -> Vec<String> {
        rules
            .into_iter()
            .map(|r| r.replace("<state_prefix>", &state_prefix))
            .collect()
    };
    let (daemon_user, daemon_rules) = documented_rule("daemon", &names, DAEMON_PW);
    let (ledger_user, ledger_rules) = documented_rule("daemon-ledger", &names, DAEMON_PW);
    assert_eq!(
        ledger_user, daemon_user,
        "the ledger rule extends the daemon's user"
    );
    let (worker_user, worker_rules) = documented_rule("transformer", &names, TRANSFORMER_PW);
    apply(&mut admin, &daemon_user, &daemon_rules);
    apply(&mut admin, &daemon_user, &fill(ledger_rules));
    apply(&mut admin, &worker_user, &fill(worker_rules));
    let w = workload(50, 10, 100);
    push_all(&mut admin, &names.source, &w.messages);
    let ledger = [
        ("REDIS_BATCH_SIZE", "10"),
        ("REDIS_PROCESSING_TIMEOUT", "0.2"),
        ("REDIS_MAX_MESSAGE_BYTES", WORKLOAD_MAX_BYTES),
        ("REDIS_BATCH_LEDGER", "true"),
        ("REDIS_BATCH_STATE_PREFIX", state_prefix.as_str()),
    ];
    let daemon_env = as_user(&server, &names, &daemon_user, DAEMON_PW, &ledger);
    let mut d = spawn_daemon(&daemon_env, &[]);
    assert!(
        wait_drained(&mut admin, &names, Duration::from_secs(10)),
        "the daemon did not drain the source under its ACL user:\n{}",
        d.all_output()
    );
    let envelopes = llen(&mut admin, &names.processing);
    assert_eq!(envelopes, 5);
    let worker_env = as_user(&server, &names, &worker_user, TRANSFORMER_PW, &ledger);
    let out = start_cli(&worker_env, &["demo", "consume", "--count", "5"])
        .finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "demo consume: {}", out.stderr);
    d.terminate_ok();
    let completed: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{state_prefix}*"))
        .query::<Vec<String>>(&mut admin)
        .unwrap()
        .into_iter()
        .filter(|k| k.len() == state_prefix.len() + 36)
        .filter(|k| {
            let status: Option<String> = redis::cmd("HGET")
                .arg(k)
                .arg("status")
                .query(&mut admin)
                .unwrap();
            status.as_deref() == Some("completed")
        })
        .collect();
    assert_eq!(
        completed.len(),
        5,
        "every batch claimed and acked to the end"
    );
    let refused: Vec<String> = problem_lines(&d)
        .into_iter()
        .filter(|l| l.contains("\"error_kind\""))
        .collect();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    assert_eq!(
        denials(&mut admin, &[&daemon_user, &worker_user]),
        Vec::<(String, String)>::new(),
        "Redis refused something the documented users did"
    );
}
