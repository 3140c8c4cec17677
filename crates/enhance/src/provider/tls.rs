//! TLS for the HTTP clients: rustls with the ring provider (no OpenSSL, no aws-lc), the
//! system's root certificates, and optionally extra CA certificates from a PEM file
//! (`idempipe --ca-file PATH` / `IDEMPIPE_CA_FILE`), e.g. a company or test CA.
//!
//! The extra CAs are a setting of each process, not of a run: every machine has its own
//! trust store and its own path to the CA file, so each `idempipe process`, `submit` or
//! `worker` is given it by flag or environment.

use std::path::{Path, PathBuf};
use std::sync::{Once, RwLock};

use reqwest::{Certificate, ClientBuilder};

/// Extra CAs trusted by every client built after [`trust_ca_file`].
static EXTRA_ROOTS: RwLock<Vec<Certificate>> = RwLock::new(Vec::new());

/// A CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("CA file {path}: {reason}")]
pub struct CaFileError {
    /// The file as given.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Installs ring as the process's rustls crypto provider (once; a provider installed
/// before, by the application, is kept).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Trusts the CA certificates in the PEM file at `path`, besides the system's roots, in
/// every HTTP client built from now on in this process.
pub fn trust_ca_file(path: &Path) -> Result<(), CaFileError> {
    let fail = |reason: String| CaFileError {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let certs = Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("it is not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut roots = EXTRA_ROOTS.write().unwrap_or_else(|e| e.into_inner());
    roots.extend(certs);
    Ok(())
}

/// `builder` with the ring provider and the extra CAs of [`trust_ca_file`].
pub fn configure(builder: ClientBuilder) -> ClientBuilder {
    install_crypto_provider();
    let roots = EXTRA_ROOTS.read().unwrap_or_else(|e| e.into_inner());
    if roots.is_empty() {
        builder
    } else {
        builder.tls_certs_merge(roots.iter().cloned())
    }
}

/// A hint for an error whose text shows a certificate problem, else "".
pub fn certificate_hint(error_text: &str) -> &'static str {
    if error_text.contains("certificate") || error_text.contains("UnknownIssuer") {
        " (if the server's certificate comes from a private CA, pass --ca-file PATH or set \
         IDEMPIPE_CA_FILE)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_ca_files_are_refused_naming_the_file() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = trust_ca_file(missing).unwrap_err().to_string();
        assert!(
            e.starts_with("CA file /nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
        let text = std::env::temp_dir().join(format!("idempipe-ca-{}.pem", std::process::id()));
        std::fs::write(&text, "not a certificate").unwrap();
        let e = trust_ca_file(&text).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::remove_file(&text).unwrap();
    }
}
