//! Who a verified client certificate names: its subject's common name, or else its first DNS
//! subject alternative name. Only called for certificates the verifier accepted; the subject is
//! read with a small DER walk over what rustls-webpki hands out, and names with control
//! characters are ignored (they would end up in log lines).

use rustls::server::ServerConnection;

/// The identity of the client on `conn`, if it presented a verified certificate.
pub(in crate::server) fn peer_identity(conn: &ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let name = common_name(cert.subject()).or_else(|| cert.valid_dns_names().next().map(str::to_string))?;
    (!name.is_empty() && !name.chars().any(char::is_control)).then_some(name)
}

/// The first commonName (2.5.4.3) in an X.509 Name's contents (RDN sets, outer SEQUENCE removed).
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !name.is_empty() {
        let (0x31, mut set, rest) = tlv(name)? else {
            return None;
        };
        name = rest;
        while !set.is_empty() {
            let (0x30, pair, rest) = tlv(set)? else {
                return None;
            };
            set = rest;
            let (0x06, oid, value) = tlv(pair)? else {
                return None;
            };
            if oid != CN {
                continue;
            }
            // UTF8String, PrintableString, IA5String.
            let (0x0c | 0x13 | 0x16, text, _) = tlv(value)? else {
                return None;
            };
            return std::str::from_utf8(text).ok().map(str::to_string);
        }
    }
    None
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn subject_cn(cn: Option<&str>, sans: &[&str]) -> Option<String> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "regcache tests");
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        let cert = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let der = cert.der().clone();
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        common_name(ee.subject()).or_else(|| ee.valid_dns_names().next().map(str::to_string))
    }

    #[test]
    fn common_name_first_then_dns_name() {
        assert_eq!(
            subject_cn(Some("builder-7"), &["ci.example"]).as_deref(),
            Some("builder-7")
        );
        assert_eq!(
            subject_cn(None, &["ci.example", "x.example"]).as_deref(),
            Some("ci.example")
        );
        assert_eq!(subject_cn(None, &[]), None);
    }

    #[test]
    fn truncated_der_is_no_name() {
        assert_eq!(tlv(&[0x30, 0x82, 0x01]), None);
        assert_eq!(common_name(&[0x31, 0x05, 0x30]), None);
    }
}
