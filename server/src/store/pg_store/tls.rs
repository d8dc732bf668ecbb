//! How the hub reaches its PostgreSQL database, and whether anyone on the
//! way can read it: every connection (the pool's, the lease's with its
//! LISTEN) is made here, so that one rule holds for all of them.
//!
//! With `[store] tls_ca`, every connection is TLS (`sslmode=require`,
//! whatever the url says), the server's certificate must chain to that CA
//! and name the url's host, and a server that does not offer TLS is
//! refused: never a fall back to clear text. A client certificate and key
//! (`tls_cert`, `tls_key`) are offered for PostgreSQL's `cert`
//! authentication; the key file must be readable by its owner alone.
//!
//! Without `tls_ca`, connections are clear text, which is safe only where
//! nobody else is on the way: a Unix socket is used as it is; TCP to a
//! loopback address works with a warning at start; TCP to any other host
//! is refused unless `allow_plaintext = true` (then warned of at start).

use crate::store::StoreError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// `[store]`'s TLS settings for the database connection.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The CA that signed the database server's certificate: TLS, verified.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM chain) for `cert` authentication.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM), readable by its owner alone.
    pub key: Option<PathBuf>,
    /// Clear text over TCP to a host that is not loopback, knowingly.
    pub allow_plaintext: bool,
}

/// Where one connection of the url goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Socket,
    Loopback,
    Network(String),
}

/// The database the hub uses: its connection settings and how every
/// connection to it is secured. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    config: Config,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The settings may hold a password: never printed.
        f.debug_struct("Database")
            .field("tls", &self.uses_tls())
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::Database(reason.into())
}

impl Database {
    /// The database `url` names, reached as `tls` says; refused when the
    /// settings would carry the data in clear text over a network, or
    /// cannot be checked (see the module's rule).
    pub fn new(url: &str, tls: &TlsOptions) -> Result<Self, StoreError> {
        let mut config: Config = url.parse().map_err(|e| {
            if asks_verify(url) {
                return invalid(
                    "[store] url says sslmode=verify-ca or verify-full, which the driver does \
                     not take: with tls_ca every connection already verifies the server's \
                     chain and host name; drop sslmode from url (or say require)",
                );
            }
            invalid(format!(
                "[store] url is not a PostgreSQL connection string: {e}"
            ))
        })?;
        let routes = routes(&config);
        let connector = match &tls.ca {
            Some(_) if tls.allow_plaintext => {
                return Err(invalid(
                    "[store] allow_plaintext = true and tls_ca contradict each other: with \
                     tls_ca every connection is TLS; drop allow_plaintext",
                ));
            }
            Some(ca) => {
                check_verifiable(&config, &routes)?;
                config.ssl_mode(SslMode::Require);
                verified_tls(ca, tls.cert.as_deref(), tls.key.as_deref())?
            }
            None => {
                check_plaintext(&config, &routes, tls)?;
                config.ssl_mode(SslMode::Disable);
                // Never used: the mode above makes no TLS request.
                unused_tls()?
            }
        };
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(connector),
        })
    }

    /// The connection settings, to adjust per use (timeouts, keepalives).
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// What every connection is made with (TLS, or none as the settings say).
    pub fn connector(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// Whether connections are TLS.
    pub fn uses_tls(&self) -> bool {
        self.config.get_ssl_mode() == SslMode::Require
    }

    /// One connection made with `config` (these settings, adjusted), TLS
    /// handshake and start-up included, given `within` at most: a server
    /// that accepts TCP and then says nothing is reported, not waited on.
    pub async fn connect(
        &self,
        config: &Config,
        within: std::time::Duration,
    ) -> Result<(Client, Connection<Socket, TlsStream>), StoreError> {
        self.try_connect(config, within)
            .await
            .map_err(StoreError::from)
    }

    /// As [`Database::connect`], saying whether waiting could help.
    pub async fn try_connect(
        &self,
        config: &Config,
        within: std::time::Duration,
    ) -> Result<(Client, Connection<Socket, TlsStream>), ConnectFailure> {
        match tokio::time::timeout(within, config.connect(self.connector())).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(e)) if unreachable(&e) => Err(ConnectFailure::Unreachable(super::db(e))),
            Ok(Err(e)) => Err(ConnectFailure::Refused(super::db(e))),
            Err(_) => Err(ConnectFailure::Unreachable(invalid(format!(
                "PostgreSQL: no answer within {} s (connection, TLS handshake or start-up)",
                within.as_secs()
            )))),
        }
    }
}

/// Why a connection to the database was not made.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The server is not there yet (connection refused, reset or timed
    /// out, no answer, starting up): worth waiting on.
    Unreachable(StoreError),
    /// It answered and refused, or the settings are wrong (TLS, the url,
    /// authentication): waiting cannot help.
    Refused(StoreError),
}

impl From<ConnectFailure> for StoreError {
    fn from(f: ConnectFailure) -> Self {
        match f {
            ConnectFailure::Unreachable(e) | ConnectFailure::Refused(e) => e,
        }
    }
}

/// Whether `e` says the server could not be reached (an I/O failure, or
/// a server not taking connections yet) rather than refused this client.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(server) = c.downcast_ref::<tokio_postgres::error::DbError>() {
            let code = server.code().code();
            // Connection exceptions, starting up or shutting down, full.
            return code.starts_with("08") || matches!(code, "57P01" | "57P03" | "53300");
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            // A TLS failure (a certificate, a name, an alert) comes as
            // invalid data; a socket that may not be opened is a setting.
            let tls = io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>());
            return !tls
                && !matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::PermissionDenied
                );
        }
        cause = c.source();
    }
    false
}

/// The stream of a connection (TLS, or the socket as it is).
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// Whether `url` asks for `sslmode=verify-ca` or `verify-full` (libpq's
/// verifying modes, which the driver's parser refuses).
fn asks_verify(url: &str) -> bool {
    let url = url.to_ascii_lowercase();
    ["verify-ca", "verify-full", "verify_ca", "verify_full"]
        .iter()
        .any(|mode| url.contains(mode))
        && url.contains("sslmode")
}

/// Where each host of the url leads (a `hostaddr` is where TCP goes).
fn routes(config: &Config) -> Vec<Route> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    (0..hosts.len().max(addrs.len()))
        .map(|i| match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => tcp_route(&ip.to_string(), Some(*ip)),
            (None, Some(Host::Tcp(name))) => tcp_route(name, name.parse::<IpAddr>().ok()),
            #[cfg(unix)]
            (None, Some(Host::Unix(_))) => Route::Socket,
            (None, None) => Route::Network(String::new()),
        })
        .collect()
}

fn tcp_route(name: &str, ip: Option<IpAddr>) -> Route {
    match ip {
        Some(ip) if ip.is_loopback() => Route::Loopback,
        None if name.eq_ignore_ascii_case("localhost") => Route::Loopback,
        _ => Route::Network(tongbao_proto::echo::shown(name).to_string()),
    }
}

/// TLS needs a host name (or address) to check the certificate against,
/// and TCP: PostgreSQL offers no TLS on a Unix socket.
fn check_verifiable(config: &Config, routes: &[Route]) -> Result<(), StoreError> {
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(invalid(
            "[store] tls_ca is set but url says sslmode=disable: remove one of them",
        ));
    }
    if routes.contains(&Route::Socket) {
        return Err(invalid(
            "[store] tls_ca is set but url names a Unix socket, where PostgreSQL has no TLS: \
             give host=NAME (the name in the database's certificate), or drop tls_ca",
        ));
    }
    let hosts = config.get_hosts();
    if hosts.is_empty() || hosts.len() < config.get_hostaddrs().len() {
        return Err(invalid(
            "[store] tls_ca needs host=NAME in url for every server: the name the \
             database's certificate is checked against",
        ));
    }
    Ok(())
}

/// Clear text is for sockets and loopback; elsewhere only when allowed,
/// and always said at start.
fn check_plaintext(config: &Config, routes: &[Route], tls: &TlsOptions) -> Result<(), StoreError> {
    if tls.cert.is_some() || tls.key.is_some() {
        return Err(invalid(
            "[store] tls_cert and tls_key are for TLS: give tls_ca too (the CA that signed \
             the database's certificate)",
        ));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(invalid(
            "[store] url says sslmode=require but tls_ca is not set: give tls_ca (the CA \
             that signed the database's certificate), so that the server is verified",
        ));
    }
    let remote: Vec<&str> = routes
        .iter()
        .filter_map(|r| match r {
            Route::Network(host) => Some(host.as_str()),
            _ => None,
        })
        .collect();
    if let Some(host) = remote.first() {
        if !tls.allow_plaintext {
            return Err(invalid(format!(
                "[store] url reaches {host:?} over TCP without TLS: give tls_ca = \"...\" (the \
                 CA that signed the database's certificate), or allow_plaintext = true on a \
                 network you trust"
            )));
        }
        tracing::warn!(
            hosts = ?remote,
            "PostgreSQL over TCP WITHOUT TLS (allow_plaintext = true): every message and \
             password crosses the network in clear text; set [store] tls_ca"
        );
    } else if routes.contains(&Route::Loopback) {
        tracing::warn!(
            "PostgreSQL over TCP without TLS, on loopback: it stays on this machine; set \
             [store] tls_ca if the database moves to another host"
        );
    }
    Ok(())
}

/// A rustls client trusting `ca` alone, offering `cert` and `key` if given.
fn verified_tls(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<rustls::ClientConfig, StoreError> {
    let read_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        invalid(format!("[store] {what} {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| read_err("tls_ca", ca, &e))? {
        let c = c.map_err(|e| read_err("tls_ca", ca, &e))?;
        roots.add(c).map_err(|e| read_err("tls_ca", ca, &e))?;
    }
    if roots.is_empty() {
        return Err(read_err("tls_ca", ca, &"holds no certificate"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(format!("TLS to PostgreSQL: {e}")))?
    .with_root_certificates(roots);
    match (cert, key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read_err("tls_cert", cert, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| read_err("tls_cert", cert, &e))?;
            let secret = private_key(key)?;
            builder
                .with_client_auth_cert(chain, secret)
                .map_err(|e| invalid(format!("[store] tls_cert and tls_key do not match: {e}")))
        }
        _ => Err(invalid(
            "[store] tls_cert and tls_key go together: give both, or neither",
        )),
    }
}

/// The private key in `key`; a file others can read is refused, not
/// used. Opened once: the mode checked is the one of the file read.
fn private_key(key: &Path) -> Result<PrivateKeyDer<'static>, StoreError> {
    let fail =
        |e: &dyn std::fmt::Display| invalid(format!("[store] tls_key {}: {e}", key.display()));
    let file = std::fs::File::open(key).map_err(|e| fail(&e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(|e| fail(&e))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "[store] tls_key {} is open to other users (mode {:o}): chmod 600 it",
                key.display(),
                mode & 0o777
            )));
        }
    }
    PrivateKeyDer::from_pem_reader(std::io::BufReader::new(file)).map_err(|e| fail(&e))
}

/// A client config for connections that make no TLS request.
fn unused_tls() -> Result<rustls::ClientConfig, StoreError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(format!("TLS to PostgreSQL: {e}")))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(url: &str, allow_plaintext: bool) -> Result<Database, StoreError> {
        Database::new(
            url,
            &TlsOptions {
                allow_plaintext,
                ..TlsOptions::default()
            },
        )
    }

    #[test]
    fn clear_text_goes_only_where_nobody_else_is_on_the_way() {
        for local in [
            "host=/run/postgresql user=hub",
            "host=127.0.0.1 user=hub",
            "host=localhost user=hub",
            "host=::1 user=hub",
            "host=db.example hostaddr=127.0.0.1 user=hub",
        ] {
            let db = plain(local, false);
            assert!(db.as_ref().is_ok_and(|d| !d.uses_tls()), "{local}: {db:?}");
        }
        for remote in [
            "host=db.example user=hub",
            "host=10.0.0.5 user=hub",
            "host=/run/postgresql,db.example user=hub",
            "host=localhost hostaddr=10.0.0.5 user=hub",
            "postgresql://hub@db.example/tongbao",
        ] {
            let refused = plain(remote, false).err().map(|e| e.to_string());
            assert!(
                refused
                    .as_deref()
                    .is_some_and(|e| e.contains("without TLS") && e.contains("tls_ca")),
                "{remote}: {refused:?}"
            );
            assert!(plain(remote, true).is_ok(), "{remote} when allowed");
        }
        // A url that asks for TLS without a CA to check it with.
        let e = plain("host=127.0.0.1 sslmode=require", false).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().contains("sslmode=require")),
            "{e:?}"
        );
        // libpq's verifying modes: tls_ca is how to verify.
        for url in [
            "host=db.example sslmode=verify-full",
            "postgresql://hub:secret@db.example/tongbao?sslmode=verify-ca",
        ] {
            let e = plain(url, false).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("tls_ca")
                    && e.contains("already verifies")
                    && !e.contains("secret")),
                "{url}: {e:?}"
            );
        }
        // A client certificate without TLS.
        let e = Database::new(
            "host=/run/postgresql",
            &TlsOptions {
                cert: Some("c.pem".into()),
                key: Some("k.pem".into()),
                ..TlsOptions::default()
            },
        )
        .err();
        assert!(e.is_some_and(|e| e.to_string().contains("give tls_ca")));
    }

    #[test]
    fn the_password_is_never_printed() -> Result<(), StoreError> {
        let db = plain("host=/run/postgresql password=hunter2", false)?;
        assert!(!format!("{db:?}").contains("hunter2"));
        Ok(())
    }

    #[test]
    fn tls_needs_a_host_name_over_tcp() {
        let with_ca = |url: &str| {
            Database::new(
                url,
                &TlsOptions {
                    ca: Some("/nonexistent/ca.pem".into()),
                    ..TlsOptions::default()
                },
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(with_ca("host=/run/postgresql").contains("Unix socket"));
        assert!(with_ca("hostaddr=10.0.0.5").contains("host=NAME"));
        assert!(with_ca("host=db.example sslmode=disable").contains("sslmode=disable"));
        let both = Database::new(
            "host=db.example",
            &TlsOptions {
                ca: Some("/nonexistent/ca.pem".into()),
                allow_plaintext: true,
                ..TlsOptions::default()
            },
        )
        .err()
        .map(|e| e.to_string());
        assert!(
            both.as_deref()
                .is_some_and(|e| e.contains("allow_plaintext") && e.contains("contradict")),
            "{both:?}"
        );
        // Settings fine: the CA file is what is missing, and it is named.
        assert!(with_ca("host=db.example").contains("/nonexistent/ca.pem"));
    }
}
