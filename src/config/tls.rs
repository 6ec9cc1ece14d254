//! Validation of the `[tls]` table: the registry listener's certificate and key (PEM), and
//! optionally a CA whose client certificates are verified (`client_auth = "required"`, the
//! default with a CA, or `"optional"`). The files are read and parsed here, so `check-config`
//! and a start with a broken file fail the same way, every problem at once.

use std::path::PathBuf;

use super::file::FileTls;
use crate::tls_files;

/// TLS on the registry listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
    pub key_file: PathBuf,
    /// CA certificates that sign client certificates; `None`: clients are not asked for one.
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client must present a certificate (only with `client_ca_file`).
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A client may present a certificate; one that does must be valid.
    Optional,
    /// A client without a valid certificate fails the handshake.
    Required,
}

pub(super) fn validate(errors: &mut Vec<String>, raw: Option<FileTls>) -> Option<TlsConfig> {
    let raw = raw?;
    let mut file = |key: &str, value: Option<String>| match value {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            errors.push(format!("tls.{key} is required in [tls]"));
            None
        }
    };
    let cert_file = file("cert_file", raw.cert_file);
    let key_file = file("key_file", raw.key_file);
    let client_ca_file = raw.client_ca_file.map(PathBuf::from);
    let client_auth = match (raw.client_auth.as_deref(), &client_ca_file) {
        (None, None) => ClientAuth::None,
        (None | Some("required"), Some(_)) => ClientAuth::Required,
        (Some("optional"), Some(_)) => ClientAuth::Optional,
        (Some(v @ ("required" | "optional")), None) => {
            errors.push(format!("tls.client_auth = {v:?} needs tls.client_ca_file"));
            ClientAuth::None
        }
        (Some(other), _) => {
            errors.push(format!(
                "tls.client_auth: {other:?} is not \"required\" or \"optional\""
            ));
            ClientAuth::None
        }
    };
    if let (Some(cert), Some(key)) = (&cert_file, &key_file) {
        if let Err(e) = tls_files::certified_key(cert, key) {
            errors.push(format!("tls: {e}"));
        }
    }
    if let Some(ca) = &client_ca_file {
        if let Err(e) = tls_files::read_roots(ca) {
            errors.push(format!("tls.client_ca_file: {e}"));
        }
    }
    Some(TlsConfig {
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
        client_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn errors(toml: &str) -> Vec<String> {
        Config::from_toml_str(toml).unwrap_err().0
    }

    #[test]
    fn every_problem_is_reported() {
        let e = errors("[tls]\nclient_auth = \"sometimes\"\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("tls.cert_file is required"), "{e:?}");
        assert!(e[2].contains("not \"required\" or \"optional\""), "{e:?}");
        let e = errors(
            "[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/k\"\nclient_auth = \"optional\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("needs tls.client_ca_file"), "{e:?}");
        assert!(
            e[1].contains("/nonexistent/c.pem is not a readable file"),
            "{e:?}"
        );
    }

    #[test]
    fn files_must_hold_what_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = errors(&format!(
            "[tls]\ncert_file = {p:?}\nkey_file = {p:?}\nclient_ca_file = {p:?}\n",
            p = empty.display().to_string()
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("holds no PEM CERTIFICATE"), "{e:?}");
        assert!(e[1].starts_with("tls.client_ca_file:"), "{e:?}");
    }

    #[test]
    fn without_tls_section_there_is_no_tls() {
        assert_eq!(Config::default().tls, None);
    }
}
