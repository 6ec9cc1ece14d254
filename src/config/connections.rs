//! The top-level settings of the client connections both listeners accept: `max_connections`
//! (how many the registry listener serves at once; the admin listener has a small fixed cap) and
//! `idle_timeout` (how long a connection may go without sending a request head, and the HTTP/2
//! keep-alive ping interval and deadline). Both are validated here, one readable line per problem.

use std::time::Duration;

use super::duration;

/// The registry listener's cap on connections served at once, by default: far above what a
/// fleet of pulling hosts keeps open, well below a raised file descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long an idle client connection stays open, by default (hyper's own header deadline).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Above this, `max_connections` is surely a typo: each connection costs a file descriptor.
const MAX_MAX_CONNECTIONS: i64 = 1_000_000;

/// The validated connection settings.
pub(super) struct Connections {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

pub(super) fn validate(errors: &mut Vec<String>, max: Option<i64>, idle: Option<&str>) -> Connections {
    let max_connections = match max {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) if (1..=MAX_MAX_CONNECTIONS).contains(&n) => n as usize,
        Some(n) => {
            errors.push(format!(
                "max_connections: {n} is not a number of connections from 1 to {MAX_MAX_CONNECTIONS}"
            ));
            DEFAULT_MAX_CONNECTIONS
        }
    };
    let idle_timeout = duration(errors, "idle_timeout", idle, DEFAULT_IDLE_TIMEOUT);
    if idle_timeout.is_zero() {
        errors.push("idle_timeout: must be longer than 0s (a client needs time to send its request)".into());
    }
    Connections {
        max_connections,
        idle_timeout,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = Config::default();
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let c = Config::from_toml_str("max_connections = 2\nidle_timeout = \"1500ms\"\n").unwrap();
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_are_one_line_each() {
        let e = Config::from_toml_str("max_connections = 0\nidle_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(
            e.0[0].starts_with("max_connections: 0 is not a number of connections"),
            "{e}"
        );
        assert!(e.0[1].starts_with("idle_timeout: must be longer than 0s"), "{e}");
        let e = Config::from_toml_str("max_connections = -5\n").unwrap_err();
        assert!(e.to_string().contains("max_connections: -5 is not"), "{e}");
        let e = Config::from_toml_str("idle_timeout = \"soon\"\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.0[0].starts_with("idle_timeout: \"soon\" is not a duration"),
            "{e}"
        );
        let e = Config::from_toml_str("max_connections = \"many\"\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].contains("invalid type: string \"many\""), "{e}");
    }
}
