//! Validation of the `[admin]` table: where the admin listener binds (never on the registry's own
//! address) and the token that state-changing admin requests (`POST /admin/gc`) must carry. The
//! token is read from `token_file` once, wrapped in `Secret` at once, and never quoted in an
//! error. Without a token those requests are served only when the admin listener is on loopback,
//! which `Config::warnings` points out.

use std::net::SocketAddr;

use super::file::FileAdmin;
use super::{address, DEFAULT_ADMIN_LISTEN};
use crate::secret::Secret;

/// The validated `[admin]` table.
#[derive(Debug, Clone)]
pub(super) struct Admin {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
}

pub(super) fn validate(errors: &mut Vec<String>, raw: FileAdmin, listen: SocketAddr) -> Admin {
    let admin_listen = address(
        errors,
        "admin.listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        "127.0.0.1:5001",
        SocketAddr::from(([127, 0, 0, 1], 5001)),
    );
    if clash(listen, admin_listen) {
        errors.push(format!(
            "admin.listen: {admin_listen} is the registry's own listen address ({listen}); give the \
             admin endpoints a port of their own"
        ));
    }
    Admin {
        listen: admin_listen,
        token: raw.token_file.and_then(|f| token(errors, &f)),
    }
}

/// Two listeners that would fight over one port (port 0 picks a free port each).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn token(errors: &mut Vec<String>, file: &str) -> Option<Secret> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                errors.push(format!("admin.token_file: {file} is empty"));
                return None;
            }
            Some(Secret::new(token))
        }
        Err(e) => {
            errors.push(format!("admin.token_file: cannot read {file}: {e}"));
            None
        }
    }
}

/// What `check-config` and `serve` warn about in a valid `[admin]` table.
pub(super) fn warnings(listen: SocketAddr, token: Option<&Secret>) -> Vec<String> {
    if token.is_none() && !listen.ip().is_loopback() {
        vec![format!(
            "admin.listen {listen} is not a loopback address and admin.token_file is not set: \
             POST /admin/gc (and `regcache cache gc` through the daemon) is refused; set \
             admin.token_file to allow it"
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn admin_listen_must_differ_from_listen() {
        let e = Config::from_toml_str("listen = \"0.0.0.0:5000\"\n[admin]\nlisten = \"127.0.0.1:5000\"\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("admin.listen: 127.0.0.1:5000 is the registry's"),
            "{e}"
        );
        let ok = "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
        assert!(Config::from_toml_str(ok).is_ok(), "port 0 picks a port each");
        let ok = "listen = \"10.0.0.1:5000\"\n[admin]\nlisten = \"127.0.0.1:5000\"\n";
        assert!(Config::from_toml_str(ok).is_ok(), "different addresses");
    }

    #[test]
    fn token_file_is_read_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let text = format!(
            "[admin]\nlisten = \"0.0.0.0:5001\"\ntoken_file = \"{}\"\n",
            file.display()
        );
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.admin_token.as_ref().map(|t| t.expose()), Some("s3cret-token"));
        assert!(c.warnings().is_empty());
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        let e = Config::from_toml_str(&text).unwrap_err();
        assert!(
            e.to_string().contains("admin.token_file:") && e.to_string().contains("is empty"),
            "{e}"
        );
        let e = Config::from_toml_str("[admin]\ntoken_file = \"/nonexistent/token\"\n").unwrap_err();
        assert!(e.to_string().contains("cannot read /nonexistent/token"), "{e}");
    }

    #[test]
    fn a_public_admin_listener_without_a_token_is_warned_about() {
        let c = Config::from_toml_str("[admin]\nlisten = \"0.0.0.0:5001\"\n").unwrap();
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("admin.token_file"), "{:?}", c.warnings());
        assert!(Config::default().warnings().is_empty());
    }
}
