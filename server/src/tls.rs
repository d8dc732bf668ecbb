//! TLS: the hub's rustls configuration and its own accept loop.
//!
//! Tonic's built-in TLS cannot check CRLs or reload material, so the hub
//! builds its rustls `ServerConfig` itself (TLS 1.3 only, client certificate
//! required, chained to the exchange CA, checked against the CRL, no
//! session resumption) and feeds finished streams to tonic. Handshakes run
//! in their own tasks with a timeout so one slow client cannot stall the
//! accept loop. The config is swapped whole when the files change; open
//! connections are registered with their certificate so that revocation
//! and expiry close them too. Connections are capped in total and per
//! party, handshakes in progress are capped, and idle connections are
//! closed (`[connections]` of hub.toml).

use crate::admission::Activity;
use crate::config::ConnectionLimits;
use crate::fatal::{self, Poisoned};
use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tongbao_proto::Hash;
use tongbao_proto::canonical::sha256;
use tongbao_proto::identity::{IdError, Principal};
use tonic::transport::server::Connected;
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection refused after its handshake stays open, so that
/// the client's first call gets the reason as a gRPC status rather than a
/// bare reset.
const REFUSED_CONNECTION_GRACE: Duration = Duration::from_secs(2);
/// The TLS state's locks, as a poisoned one is reported.
const SEEN: &str = "TLS file prints";
const REVOKED: &str = "TLS revocations";
const OPEN: &str = "open connections";
const PEERS: &str = "connections by peer";

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
}

fn read_err(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("certificates", path, e))?;
    if certs.is_empty() {
        return Err(read_err("certificates", path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_err("private key", path, e))
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| read_err("CRL", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("CRL", path, e))
}

/// The hub's TLS material, by path.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

/// Builds the rustls server configuration from files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(Material::load(files)?.config)
}

/// One consistent load of the TLS files: the rustls config built from
/// them and the serials their CRL revokes (to close open connections).
struct Material {
    config: Arc<ServerConfig>,
    revoked: HashSet<String>,
    summary: String,
}

impl Material {
    fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs(&files.ca)? {
            roots
                .add(ca)
                .map_err(|e| read_err("CA certificate", &files.ca, e))?;
        }
        let crls = match &files.crl {
            Some(p) => load_crls(p)?,
            None => Vec::new(),
        };
        let mut revoked = HashSet::new();
        let mut crl_numbers = Vec::new();
        for der in &crls {
            let path = files.crl.as_deref().unwrap_or(Path::new("crl"));
            let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
                .map_err(|e| read_err("CRL", path, e))?;
            if let Some(n) = crl.crl_number() {
                crl_numbers.push(n.to_string());
            }
            for r in crl.iter_revoked_certificates() {
                revoked.insert(serial_hex(r.raw_serial()));
            }
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls)
                .only_check_end_entity_revocation()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // No resumption: a resumed session would restore a client
        // certificate without checking it against the current CRL.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let summary = format!(
            "CA {}, certificate {}, CRL {}",
            files.ca.display(),
            files.cert.display(),
            match &files.crl {
                Some(p) => format!(
                    "{} (number {}, {} revoked)",
                    p.display(),
                    if crl_numbers.is_empty() {
                        "-".to_string()
                    } else {
                        crl_numbers.join(",")
                    },
                    revoked.len()
                ),
                None => "none".into(),
            }
        );
        Ok(Self {
            config: Arc::new(config),
            revoked,
            summary,
        })
    }
}

/// The serial of a certificate, as [`serial_hex`] writes it.
pub fn certificate_serial(leaf: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::X509Certificate;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    Some(serial_hex(cert.raw_serial()))
}

/// A certificate serial as lowercase hex without leading zeros, so serials
/// from certificates, CRLs and the CA index compare equal.
fn serial_hex(raw: &[u8]) -> String {
    let hex = hex::encode(raw);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

/// Content fingerprint of the TLS files, to notice any change (a rename
/// over the file, a copy, an edit) whatever the file times say.
fn fingerprint(files: &TlsFiles) -> Result<Hash, TlsError> {
    let mut all = Vec::new();
    for (what, path) in [
        ("CA certificate", Some(&files.ca)),
        ("certificate", Some(&files.cert)),
        ("private key", Some(&files.key)),
        ("CRL", files.crl.as_ref()),
    ] {
        if let Some(path) = path {
            let bytes = std::fs::read(path).map_err(|e| read_err(what, path, e))?;
            all.extend_from_slice(&sha256(&bytes));
        }
    }
    Ok(sha256(&all))
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub summary: String,
    /// Open connections closed because their certificate is now revoked
    /// or expired.
    pub closed: usize,
}

/// The hub's current TLS material, swapped whole on reload. Each handshake
/// takes the config current at that moment; established connections keep
/// theirs. Failed reloads leave the current material in place.
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    revoked: RwLock<HashSet<String>>,
    /// Fingerprint of the last load attempted, successful or not.
    seen: Mutex<Option<Hash>>,
    connections: Arc<Connections>,
}

impl TlsReloader {
    /// Loads the material once; the hub does not start without it.
    pub fn new(files: TlsFiles, limits: ConnectionLimits) -> Result<Arc<Self>, TlsError> {
        let seen = fingerprint(&files)?;
        let material = Material::load(&files)?;
        tracing::info!(material = %material.summary, "TLS material loaded");
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(material.config),
            revoked: RwLock::new(material.revoked),
            seen: Mutex::new(Some(seen)),
            connections: Arc::new(Connections::new(limits)),
        }))
    }

    /// The config for the next handshake.
    pub fn config(&self) -> Result<Arc<ServerConfig>, Poisoned> {
        Ok(fatal::read(&self.current, "TLS config")?.clone())
    }

    /// Connections open now.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Re-reads every file now, then closes connections whose certificate
    /// the new CRL revokes. On error nothing changes.
    pub fn reload(&self) -> Result<ReloadOutcome, TlsError> {
        let print = fingerprint(&self.files)?;
        *fatal::lock(&self.seen, SEEN)? = Some(print);
        let material = Material::load(&self.files)?;
        *fatal::write(&self.current, "TLS config")? = material.config;
        *fatal::write(&self.revoked, REVOKED)? = material.revoked;
        let closed = self.sweep()?;
        tracing::info!(material = %material.summary, closed, "TLS material reloaded");
        Ok(ReloadOutcome {
            summary: material.summary,
            closed,
        })
    }

    /// Reloads when a file's content changed since the last attempt.
    /// Returns None when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<ReloadOutcome, TlsError>> {
        let print = fingerprint(&self.files);
        let mut seen = match fatal::lock(&self.seen, SEEN) {
            Ok(s) => s,
            Err(e) => return Some(Err(e.into())),
        };
        match print {
            Ok(p) if Some(p) == *seen => None,
            // An unreadable file is reported once, not every second.
            Err(e) if seen.is_some() => {
                *seen = None;
                Some(Err(e))
            }
            Err(_) => None,
            Ok(_) => {
                drop(seen);
                Some(self.reload())
            }
        }
    }

    /// Closes every open connection whose client certificate is revoked by
    /// the current CRL or has expired. Returns how many were closed.
    pub fn sweep(&self) -> Result<usize, Poisoned> {
        let revoked = fatal::read(&self.revoked, REVOKED)?.clone();
        self.connections.close_where(|c| {
            if revoked.contains(c.serial) {
                Some("certificate revoked")
            } else if c.not_after_secs < now_secs() {
                Some("certificate expired")
            } else {
                None
            }
        })
    }
}

fn now_secs() -> i64 {
    tongbao_proto::now_micros() / 1_000_000
}

/// An open client connection, as the hub needs to find and close it.
struct OpenConnection {
    party: String,
    serial: String,
    not_after_secs: i64,
    /// A second handle on the socket: shutting it down ends the connection
    /// under the TLS and HTTP/2 layers that own the first.
    socket: std::net::TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

/// What the hub knows of a connection when deciding to close it.
pub struct ConnectionView<'a> {
    pub party: &'a str,
    pub serial: &'a str,
    pub not_after_secs: i64,
}

/// The registry of open client connections: each with its certificate's
/// serial and expiry, so revocation and expiry can close live connections
/// (a rustls server checks a certificate only at the handshake). It also
/// holds the caps on connections and handshakes.
pub struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, OpenConnection>>,
    /// Every connection handed to the gRPC server, refused ones included,
    /// by peer address: how a call finds its connection. Each holds its
    /// guard's token: a closing connection removes its own entry only,
    /// never that of a new connection from the same address and port.
    peers: Mutex<HashMap<SocketAddr, (u64, Arc<Activity>)>>,
    limits: ConnectionLimits,
    /// One permit per handshake in progress.
    handshakes: Arc<Semaphore>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            next: AtomicU64::new(0),
            open: Mutex::default(),
            peers: Mutex::default(),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            limits,
        }
    }

    /// TLS handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.limits
            .max_handshakes
            .saturating_sub(self.handshakes.available_permits())
    }

    /// The connection a call came on, by the peer's address.
    pub fn activity(&self, peer: SocketAddr) -> Option<Arc<Activity>> {
        fatal::lock(&self.peers, PEERS)
            .ok()?
            .get(&peer)
            .map(|(_, activity)| activity.clone())
    }

    /// Open connections per party URI.
    pub fn parties(&self) -> Result<Vec<String>, Poisoned> {
        let open = fatal::lock(&self.open, OPEN)?;
        Ok(open.values().map(|c| c.party.clone()).collect())
    }

    /// Closes every open connection of a party (a suspended unit).
    pub fn close_party(&self, party_uri: &str) -> Result<usize, Poisoned> {
        self.close_where(|c| (c.party == party_uri).then_some("party suspended"))
    }

    /// Closes every open connection (a shutdown whose streams did not end
    /// in time).
    pub fn close_all(&self) -> Result<usize, Poisoned> {
        self.close_where(|_| Some("hub shutting down"))
    }

    /// Closes every open connection of a unit that may no longer call (the
    /// leader's SuspendUnit, a standby's registry refresh): its open
    /// streams never authenticate again.
    pub fn close_unit(&self, unit: &str) -> Result<usize, Poisoned> {
        self.close_party(&Principal::Unit(unit.to_string()).uri())
    }

    /// Registers an established connection, or says which cap it is over.
    /// Counted and inserted under one lock, so that concurrent handshakes
    /// cannot pass a cap together.
    fn admit(
        self: &Arc<Self>,
        conn: OpenConnection,
    ) -> Result<ConnectionGuard, Box<(String, OpenConnection)>> {
        let mut open = match fatal::lock(&self.open, OPEN) {
            Ok(open) => open,
            Err(poisoned) => return Err(Box::new((poisoned.to_string(), conn))),
        };
        if open.len() >= self.limits.max_connections {
            let why = format!(
                "the hub already has {} open connections (connections.max_connections); try again later",
                open.len()
            );
            return Err(Box::new((why, conn)));
        }
        let same_party = open.values().filter(|c| c.party == conn.party).count();
        if same_party >= self.limits.max_connections_per_party {
            let why = format!(
                "{} already has {same_party} open connections (connections.max_connections_per_party); close one or share a connection between calls",
                conn.party
            );
            return Err(Box::new((why, conn)));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.track(conn.peer, conn.activity.clone());
        guard.id = Some(id);
        open.insert(id, conn);
        Ok(guard)
    }

    /// Makes a connection findable by its calls until the guard is dropped.
    fn track(self: &Arc<Self>, peer: SocketAddr, activity: Arc<Activity>) -> ConnectionGuard {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut peers) = fatal::lock(&self.peers, PEERS) {
            peers.insert(peer, (token, activity));
        }
        ConnectionGuard {
            id: None,
            token,
            peer,
            connections: self.clone(),
        }
    }

    /// Closes every connection that has had no open call for `idle`.
    pub fn close_idle(&self, idle: Duration) -> Result<usize, Poisoned> {
        let closed = self.remove_where(|c| {
            c.activity
                .idle_for()
                .is_some_and(|for_| for_ >= idle)
                .then_some("idle")
        })?;
        for (c, _) in &closed {
            tracing::info!(party = %c.party, peer = %c.peer, idle_secs = idle.as_secs(), "closing idle connection (connections.idle_timeout_secs)");
        }
        Ok(closed.len())
    }

    fn close_where(
        &self,
        why: impl Fn(&ConnectionView<'_>) -> Option<&'static str>,
    ) -> Result<usize, Poisoned> {
        let closed = self.remove_where(|c| {
            why(&ConnectionView {
                party: &c.party,
                serial: &c.serial,
                not_after_secs: c.not_after_secs,
            })
        })?;
        for (c, reason) in &closed {
            tracing::warn!(party = %c.party, serial = %c.serial, %reason, "closing connection");
        }
        Ok(closed.len())
    }

    /// Removes and shuts down the connections `why` names a reason for.
    fn remove_where(
        &self,
        why: impl Fn(&OpenConnection) -> Option<&'static str>,
    ) -> Result<Vec<(OpenConnection, &'static str)>, Poisoned> {
        let mut open = fatal::lock(&self.open, OPEN)?;
        let doomed: Vec<(u64, &'static str)> = open
            .iter()
            .filter_map(|(id, c)| why(c).map(|w| (*id, w)))
            .collect();
        let closed = doomed
            .into_iter()
            .filter_map(|(id, reason)| {
                let c = open.remove(&id)?;
                let _ = c.socket.shutdown(std::net::Shutdown::Both);
                Some((c, reason))
            })
            .collect();
        Ok(closed)
    }
}

/// Removes its connection from the registry when the stream is dropped.
struct ConnectionGuard {
    /// None for a refused connection, which is never registered as open.
    id: Option<u64>,
    /// Its entry in `peers`.
    token: u64,
    peer: SocketAddr,
    connections: Arc<Connections>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // A poisoned list is reported by the lock itself: the hub stops.
        if let Some(id) = self.id
            && let Ok(mut open) = fatal::lock(&self.connections.open, OPEN)
        {
            open.remove(&id);
        }
        if let Ok(mut peers) = fatal::lock(&self.connections.peers, PEERS)
            && peers.get(&self.peer).is_some_and(|(t, _)| *t == self.token)
        {
            peers.remove(&self.peer);
        }
    }
}

/// An established TLS stream that stays registered while it lives. It
/// reports exactly the connect info of the inner stream, so
/// `Request::peer_certs` keeps working.
pub struct TrackedStream {
    inner: TlsStream<TcpStream>,
    _guard: ConnectionGuard,
}

impl Connected for TrackedStream {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Party, serial and expiry of a connection's client certificate.
fn describe_peer(tls: &TlsStream<TcpStream>) -> Option<(String, String, i64)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let party = peer_principal(leaf)
        .map(|p| p.uri())
        .unwrap_or_else(|e| format!("(unnamed: {e})"));
    Some((
        party,
        serial_hex(cert.raw_serial()),
        cert.validity().not_after.timestamp(),
    ))
}

/// Told of every connection refused before a call could be made (the
/// access log records it): the peer and the reason.
pub type HandshakeRefusals = Arc<dyn Fn(SocketAddr, String) + Send + Sync>;

/// Accepts TCP connections, runs each handshake in its own task with the
/// TLS config current at that moment, registers the established
/// connection, and hands it to the gRPC server until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    streams: mpsc::Sender<Result<TrackedStream, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
    refused: HandshakeRefusals,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // serve_with_incoming ignores tonic's own nodelay setting.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let (tcp, socket) = match split_socket(tcp) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot keep a handle on the socket");
                continue;
            }
        };
        // Poisoned: reported by the lock itself; the hub is stopping.
        let Ok(config) = tls.config() else {
            continue;
        };
        let connections = tls.connections.clone();
        // Refused before any TLS work: the client sees the connection
        // closed during its handshake and may retry.
        let Ok(permit) = connections.handshakes.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                max_handshakes = connections.limits.max_handshakes,
                "refusing connection: too many TLS handshakes in progress (connections.max_handshakes)"
            );
            refused(
                peer,
                "too many TLS handshakes in progress (connections.max_handshakes)".into(),
            );
            continue;
        };
        let acceptor = TlsAcceptor::from(config);
        let streams = streams.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(inner)) => {
                    let (party, serial, not_after_secs) = describe_peer(&inner)
                        .unwrap_or_else(|| ("(none)".into(), String::new(), i64::MAX));
                    let guard = match connections.admit(OpenConnection {
                        party,
                        serial,
                        not_after_secs,
                        socket,
                        peer,
                        activity: Activity::admitted(),
                    }) {
                        Ok(guard) => guard,
                        Err(refused) => {
                            let (why, conn) = *refused;
                            refuse_after_handshake(&connections, conn, why)
                        }
                    };
                    let _ = streams
                        .send(Ok(TrackedStream {
                            inner,
                            _guard: guard,
                        }))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    refused(peer, format!("TLS handshake refused: {e}"));
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    refused(peer, "TLS handshake timed out".into());
                }
            }
        });
    }
}

/// Serves a connection that is over a cap only to answer its calls with
/// the reason (`ResourceExhausted`, see `admission`), and closes it after
/// a short grace. It counts toward no cap.
fn refuse_after_handshake(
    connections: &Arc<Connections>,
    conn: OpenConnection,
    why: String,
) -> ConnectionGuard {
    tracing::warn!(party = %conn.party, peer = %conn.peer, "refusing connection: {why}");
    let guard = connections.track(conn.peer, Activity::refused(why));
    tokio::spawn(async move {
        tokio::time::sleep(REFUSED_CONNECTION_GRACE).await;
        let _ = conn.socket.shutdown(std::net::Shutdown::Both);
    });
    guard
}

/// The socket for tokio, and a duplicate handle the hub keeps to shut the
/// connection down later.
fn split_socket(tcp: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_socket = tcp.into_std()?;
    let handle = std_socket.try_clone()?;
    Ok((TcpStream::from_std(std_socket)?, handle))
}

/// Why a verified certificate does not name a Tongbao party.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("client certificate carries no Tongbao SAN URI (urn:tongbao:...)")]
    NoIdentity,
    #[error("client certificate carries more than one Tongbao SAN URI")]
    AmbiguousIdentity,
    #[error(transparent)]
    BadIdentity(#[from] IdError),
}

/// The party named by a (chain-verified) client certificate's SAN URI.
pub fn peer_principal(leaf: &CertificateDer<'_>) -> Result<Principal, PeerError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| PeerError::Unparsable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PeerError::Unparsable(e.to_string()))?
        .ok_or(PeerError::NoIdentity)?;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && uri.starts_with("urn:tongbao:")
        {
            if found.is_some() {
                return Err(PeerError::AmbiguousIdentity);
            }
            found = Some(Principal::from_uri(uri)?);
        }
    }
    found.ok_or(PeerError::NoIdentity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that reconnects from the same address and port before the
    /// hub has dropped its old connection keeps its new entry: calls on
    /// the new connection still find it.
    #[test]
    fn a_closing_connection_leaves_a_new_one_from_the_same_address() {
        let connections = Arc::new(Connections::new(ConnectionLimits::default()));
        let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
        let old = connections.track(peer, Activity::admitted());
        let fresh = Activity::admitted();
        let new = connections.track(peer, fresh.clone());
        drop(old);
        let found = connections.activity(peer);
        assert!(found.is_some_and(|a| Arc::ptr_eq(&a, &fresh)));
        drop(new);
        assert!(connections.activity(peer).is_none());
    }
}
