//! Hiding secrets. Every place that shows a setting's value (error lines, `check-config`)
//! goes through [`redact`], so the rule for what is secret lives in one function.

use std::borrow::Cow;

use super::keys::env_name;

/// Keys whose values are secrets (lower case, without the prefix).
const SECRET_KEYS: &[&str] = &["password", "sentinel_password", "url"];

/// What may be shown of `value`, the value of environment variable `variable`.
///
/// Non-secret values come back unchanged. A URL keeps everything but its password, since the
/// host is what an operator needs to see; other secrets are replaced whole.
pub fn redact<'a>(variable: &str, value: &'a str) -> Cow<'a, str> {
    if !SECRET_KEYS.iter().any(|key| env_name(key) == variable) {
        Cow::Borrowed(value)
    } else if variable == env_name("url") {
        Cow::Owned(redact_url(value))
    } else {
        Cow::Borrowed("<redacted>")
    }
}

/// A URL with any password replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".to_string();
    };
    // The user information ends at the last '@' (a password may hold '/' or '@').
    match rest.rsplit_once('@') {
        Some((userinfo, host_and_path)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:<redacted>"),
                // `redis://secret@host` puts the password where a user name would be.
                None => "<redacted>".to_string(),
            };
            format!("{scheme}://{user}@{host_and_path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_redaction() {
        assert_eq!(
            redact_url("redis://u:p@h:1/0"),
            "redis://u:<redacted>@h:1/0"
        );
        assert_eq!(redact_url("redis://p@h"), "redis://<redacted>@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn only_secrets_are_redacted() {
        assert_eq!(redact("REDIS_BATCH_SIZE", "10"), "10");
        assert_eq!(redact("RUST_LOG", "debug"), "debug");
        assert_eq!(redact("REDIS_PASSWORD", "hunter2"), "<redacted>");
        assert_eq!(redact("REDIS_PASSWORD", ""), "<redacted>");
        assert_eq!(redact("REDIS_SENTINEL_PASSWORD", "hunter2"), "<redacted>");
        // A secret's file name is not a secret: operators need to see which file is read.
        assert_eq!(redact("REDIS_PASSWORD_FILE", "/run/s"), "/run/s");
        assert_eq!(
            redact("REDIS_URL", "redis://u:hunter2@h:1/0"),
            "redis://u:<redacted>@h:1/0"
        );
        assert_eq!(redact("REDIS_URL", "not a url hunter2"), "<redacted>");
    }
}
