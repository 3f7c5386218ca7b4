//! Trust for TLS connections to sources: the public roots (Mozilla's, built in) unless a
//! source's `ca_file` names a private CA's certificates (PEM), which are then trusted instead.
//! Names are always checked against the certificate: there is no switch to turn that off.

use super::Refused;
use anyhow::Result;
use std::path::Path;
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
    let tls = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(e, ureq::Error::Tls(_) | ureq::Error::TlsRequired)
        || tls.is_some_and(|t| {
            matches!(
                t,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::AlertReceived(_)
            )
        })
}
