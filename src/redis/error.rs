//! What went wrong talking to Redis: a short, closed set of error kinds (the `kind` label of
//! the error counter and the `error_kind` log field), and [`RedisFailure`], the one error that
//! says where (address, command, key) and what Redis said.
//!
//! Kinds are decided from redis-rs's error kind and the server's error code, never from message
//! text, so they stay stable across client and server versions.

use std::fmt;

use redis::{RedisError, ServerErrorKind};

/// A short, stable class of Redis error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer within the response or connect timeout.
    Timeout,
    /// The connection failed (refused, reset, TLS...).
    Io,
    /// Credentials refused (`NOAUTH`, `WRONGPASS`).
    Auth,
    /// The ACL user may not run the command or touch the key (`NOPERM`).
    NoPerm,
    /// The server is still loading its dataset (`LOADING`).
    Loading,
    /// The server is a read-only replica (`READONLY`).
    ReadOnly,
    /// A transaction was discarded because a command in it was rejected (`EXECABORT`).
    ExecAbort,
    /// The script is not cached (`NOSCRIPT`).
    NoScript,
    /// A key holds the wrong type of value (`WRONGTYPE`).
    WrongType,
    /// The server hit `maxmemory` (`OOM`).
    Oom,
    /// The server refuses writes because it cannot persist (`MISCONF`).
    Misconf,
    /// Any other error reply from the server.
    Server,
    /// The reply did not have the expected shape.
    Protocol,
    /// The lease was lost before a commit ran, so the commit was undone.
    Fenced,
    /// The source's tail was not what the daemon read (a foreign writer changed it), so the
    /// commit was undone.
    TailChanged,
    /// Anything else (client-side errors).
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::Auth,
        ErrorKind::NoPerm,
        ErrorKind::Loading,
        ErrorKind::ReadOnly,
        ErrorKind::ExecAbort,
        ErrorKind::NoScript,
        ErrorKind::WrongType,
        ErrorKind::Oom,
        ErrorKind::Misconf,
        ErrorKind::Server,
        ErrorKind::Protocol,
        ErrorKind::Fenced,
        ErrorKind::TailChanged,
        ErrorKind::Other,
    ];

    /// The metrics label and `error_kind` log value. Dashboards and alerts match on these, so
    /// they never change.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Auth => "auth",
            ErrorKind::NoPerm => "no_perm",
            ErrorKind::Loading => "loading",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::ExecAbort => "exec_abort",
            ErrorKind::NoScript => "no_script",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::Oom => "oom",
            ErrorKind::Misconf => "misconf",
            ErrorKind::Server => "server",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Fenced => "fenced",
            ErrorKind::TailChanged => "tail_changed",
            ErrorKind::Other => "other",
        }
    }

    /// Whether an operator must fix something (credentials, ACLs, a key's type, memory,
    /// persistence, pointing at a replica): retrying alone never helps, so these are logged
    /// as errors rather than warnings.
    pub const fn needs_operator(self) -> bool {
        matches!(
            self,
            ErrorKind::Auth
                | ErrorKind::NoPerm
                | ErrorKind::WrongType
                | ErrorKind::Oom
                | ErrorKind::Misconf
                | ErrorKind::ReadOnly
        )
    }

    /// The kind of an error from redis-rs.
    pub fn of(e: &RedisError) -> ErrorKind {
        use redis::ErrorKind as Client;
        if e.is_timeout() {
            return ErrorKind::Timeout;
        }
        // A pipeline or transaction reports the errors of its commands; the first one that is
        // not the transaction's own abort says why.
        if let Some(errors) = e.clone().into_server_errors() {
            if let Some((_, first)) = errors.iter().find(|(_, e)| e.code() != "EXECABORT") {
                return ErrorKind::from_code(first.code()).unwrap_or(ErrorKind::Server);
            }
        }
        match e.kind() {
            Client::Io => ErrorKind::Io,
            Client::AuthenticationFailed => ErrorKind::Auth,
            Client::Server(ServerErrorKind::NoPerm) => ErrorKind::NoPerm,
            Client::Server(ServerErrorKind::BusyLoading) => ErrorKind::Loading,
            Client::Server(ServerErrorKind::ReadOnly) => ErrorKind::ReadOnly,
            Client::Server(ServerErrorKind::ExecAbort) => ErrorKind::ExecAbort,
            Client::Server(ServerErrorKind::NoScript) => ErrorKind::NoScript,
            Client::Server(_) => ErrorKind::Server,
            Client::Parse | Client::UnexpectedReturnType => ErrorKind::Protocol,
            _ => e
                .code()
                .and_then(ErrorKind::from_code)
                .unwrap_or(ErrorKind::Other),
        }
    }

    /// The kind of a Redis error code, the first word of an error reply (`WRONGTYPE`, `OOM`,
    /// ...); `None` for a code with no kind of its own.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Some(match code {
            "WRONGTYPE" => ErrorKind::WrongType,
            "NOAUTH" | "WRONGPASS" => ErrorKind::Auth,
            "NOPERM" => ErrorKind::NoPerm,
            "OOM" => ErrorKind::Oom,
            "MISCONF" => ErrorKind::Misconf,
            "LOADING" => ErrorKind::Loading,
            "READONLY" => ErrorKind::ReadOnly,
            "EXECABORT" => ErrorKind::ExecAbort,
            "NOSCRIPT" => ErrorKind::NoScript,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Redis call that failed: where, doing what, and what Redis (or the connection) said.
/// Module error enums carry it instead of repeating an address and a [`RedisError`].
#[derive(Debug)]
pub struct RedisFailure {
    /// Address of the server (never with credentials).
    pub addr: String,
    /// The command, the commands of a pipeline (`"LLEN, LRANGE"`), or `connect` when none
    /// could be sent.
    pub command: &'static str,
    /// The key worked on, when there is one.
    pub key: Option<String>,
    /// What redis-rs said.
    pub source: RedisError,
}

impl RedisFailure {
    /// A failure of `command` on the server at `addr`, with no particular key.
    pub fn new(addr: impl Into<String>, command: &'static str, source: RedisError) -> Self {
        RedisFailure {
            addr: addr.into(),
            command,
            key: None,
            source,
        }
    }

    /// The same failure, naming the key it was about.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::of(&self.source)
    }
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command)?;
        if let Some(key) = &self.key {
            write!(f, " on {key}")?;
        }
        write!(
            f,
            " failed on Redis at {} ({}): {}",
            self.addr,
            self.kind(),
            self.source
        )
    }
}

impl std::error::Error for RedisFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ErrorKind as Client;

    /// An error reply as the client parses it off the wire.
    fn server_error(code: &str) -> RedisError {
        let reply = format!("-{code} some detail\r\n");
        let value = redis::parse_redis_value(reply.as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn labels_are_stable() {
        let labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "timeout",
                "io",
                "auth",
                "no_perm",
                "loading",
                "read_only",
                "exec_abort",
                "no_script",
                "wrong_type",
                "oom",
                "misconf",
                "server",
                "protocol",
                "fenced",
                "tail_changed",
                "other"
            ]
        );
        assert_eq!(ErrorKind::WrongType.to_string(), "wrong_type");
    }

    #[test]
    fn operator_kinds_are_the_ones_waiting_cannot_fix() {
        let must_act: Vec<&str> = ErrorKind::ALL
            .iter()
            .filter(|k| k.needs_operator())
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            must_act,
            [
                "auth",
                "no_perm",
                "read_only",
                "wrong_type",
                "oom",
                "misconf"
            ]
        );
    }

    #[test]
    fn codes_map_to_kinds() {
        for (code, kind) in [
            ("WRONGTYPE", ErrorKind::WrongType),
            ("NOAUTH", ErrorKind::Auth),
            ("WRONGPASS", ErrorKind::Auth),
            ("NOPERM", ErrorKind::NoPerm),
            ("OOM", ErrorKind::Oom),
            ("MISCONF", ErrorKind::Misconf),
            ("LOADING", ErrorKind::Loading),
            ("READONLY", ErrorKind::ReadOnly),
            ("EXECABORT", ErrorKind::ExecAbort),
            ("NOSCRIPT", ErrorKind::NoScript),
        ] {
            assert_eq!(ErrorKind::from_code(code), Some(kind), "{code}");
        }
        assert_eq!(ErrorKind::from_code("ERR"), None);
        assert_eq!(
            ErrorKind::from_code("wrongtype"),
            None,
            "codes are upper case"
        );
        assert_eq!(
            ErrorKind::from_code("WRONGTYPE Operation"),
            None,
            "a code, not a line"
        );
    }

    #[test]
    fn client_errors_map_to_kinds() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(ErrorKind::of(&io), ErrorKind::Io);
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(ErrorKind::of(&timed_out), ErrorKind::Timeout);
        let auth = RedisError::from((Client::AuthenticationFailed, "no"));
        assert_eq!(ErrorKind::of(&auth), ErrorKind::Auth);
        let parse = RedisError::from((Client::Parse, "bad"));
        assert_eq!(ErrorKind::of(&parse), ErrorKind::Protocol);
        let shape = RedisError::from((Client::UnexpectedReturnType, "bad"));
        assert_eq!(ErrorKind::of(&shape), ErrorKind::Protocol);
        let client = RedisError::from((Client::InvalidClientConfig, "bad url"));
        assert_eq!(ErrorKind::of(&client), ErrorKind::Other);
    }

    #[test]
    fn server_errors_map_by_code() {
        for (code, kind) in [
            ("WRONGTYPE", ErrorKind::WrongType),
            ("NOPERM", ErrorKind::NoPerm),
            ("OOM", ErrorKind::Oom),
            ("MISCONF", ErrorKind::Misconf),
            ("LOADING", ErrorKind::Loading),
            ("READONLY", ErrorKind::ReadOnly),
            ("NOSCRIPT", ErrorKind::NoScript),
            ("WRONGPASS", ErrorKind::Auth),
            ("ERR", ErrorKind::Server),
            ("SOMETHINGNEW", ErrorKind::Server),
        ] {
            assert_eq!(ErrorKind::of(&server_error(code)), kind, "{code}");
        }
    }

    #[test]
    fn failure_names_command_key_address_and_kind() {
        let f = RedisFailure::new("h:1", "LLEN", server_error("WRONGTYPE")).with_key("q");
        assert_eq!(f.kind(), ErrorKind::WrongType);
        let text = f.to_string();
        assert!(
            text.starts_with("LLEN on q failed on Redis at h:1 (wrong_type): "),
            "{text}"
        );
        let f = RedisFailure::new("h:1", "PING", server_error("ERR"));
        assert!(
            f.to_string()
                .starts_with("PING failed on Redis at h:1 (server): "),
            "{f}"
        );
        assert!(std::error::Error::source(&f).is_some());
    }
}
