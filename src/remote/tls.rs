//! Trust for TLS connections to sources: the public roots (Mozilla's, built in) unless a
//! source's `ca_file` names a private CA's certificates (PEM), which are then trusted instead.
//! Names are always checked against the certificate: there is no switch to turn that off.
//! HTTPS (S3) goes through ureq's settings, FTPS through a rustls client configuration.

use super::Refused;
use anyhow::Result;
use std::path::Path;
use std::sync::Arc;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The certificates in a PEM file; none is an error (a file that trusts nothing is a mistake).
fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem =
        std::fs::read(path).map_err(|e| Refused(format!("ca_file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => return Err(Refused(format!("ca_file {}: {e}", path.display())).into()),
        }
    }
    if out.is_empty() {
        return Err(Refused(format!("ca_file {}: no certificate in it", path.display())).into());
    }
    Ok(out)
}

/// An HTTP client's TLS settings trusting only the certificates in `ca_file`.
pub fn ureq_roots(ca_file: &Path) -> Result<TlsConfig> {
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certificates(ca_file)?))
        .build())
}

/// A TLS failure that trying again cannot fix: the server's certificate refused (unknown
/// issuer, wrong name, expired), or no protocol both sides speak.
pub fn refused(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Tls(_) | ureq::Error::TlsRequired => true,
        ureq::Error::Rustls(r) => refused_by_rustls(r),
        ureq::Error::Io(io) => io_refused(io),
        _ => false,
    }
}

/// An I/O error that is a TLS refusal (how rustls reports one through a stream).
pub fn io_refused(io: &std::io::Error) -> bool {
    io.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(refused_by_rustls)
}

fn refused_by_rustls(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::AlertReceived(_)
    )
}

/// A TLS client's settings for FTPS: the public roots, or only `ca_file`'s certificates.
/// Sessions are resumed (rustls keeps them in memory), which FTPS servers require of the data
/// connections. `uploads`: TLS 1.2 only. A TLS 1.3 session is resumed from a ticket, and rustls
/// uses each ticket once; the server hands out new ones on each data connection, which a
/// download reads but an upload never does — so after the control connection's tickets ran out
/// (two, from OpenSSL servers) a third upload would need a full handshake, which servers that
/// require session reuse (vsftpd's default) refuse. A TLS 1.2 session is resumed any number of
/// times, as FTPS clients have always done.
pub fn rustls_config(ca_file: Option<&Path>, uploads: bool) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            for c in certificates(ca)? {
                roots
                    .add(rustls::pki_types::CertificateDer::from(c.der().to_vec()))
                    .map_err(|e| Refused(format!("ca_file {}: {e}", ca.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring, as ureq's HTTPS uses (deprecated for lacking post-quantum key exchange, which FTPS
    // servers do not offer).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if uploads {
        builder.with_protocol_versions(&[&rustls::version::TLS12])?
    } else {
        builder.with_safe_default_protocol_versions()?
    };
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    Ok(Arc::new(config))
}
