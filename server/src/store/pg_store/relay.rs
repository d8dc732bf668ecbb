//! A TCP relay in front of the test database, for tests of what the
//! store does when the database misbehaves in ways a Unix socket never
//! does: a relay that freezes (keeps every connection open, forwards
//! nothing, as a database host that hangs with its network up), or that
//! loses the reply to one COMMIT (the database commits, the hub never
//! hears it). Tests only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Where the relay forwards to.
#[derive(Debug, Clone)]
enum Upstream {
    Unix(String),
    Tcp(String),
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

impl Upstream {
    async fn connect(&self) -> std::io::Result<(Reader, Writer)> {
        Ok(match self {
            Self::Unix(path) => {
                let (r, w) = UnixStream::connect(path).await?.into_split();
                (Box::new(r), Box::new(w))
            }
            Self::Tcp(addr) => {
                let (r, w) = TcpStream::connect(addr.as_str()).await?.into_split();
                (Box::new(r), Box::new(w))
            }
        })
    }
}

/// What the relay does now.
#[derive(Default)]
struct Mode {
    /// Forwards nothing more, in either direction; connections stay open.
    frozen: AtomicBool,
    /// The next COMMIT a client sends reaches the database; its reply is
    /// dropped with the connection.
    lose_commit_reply: AtomicBool,
}

/// A relay on 127.0.0.1, port 0; stops (closing every connection) on drop.
pub struct Relay {
    mode: Arc<Mode>,
    /// Held for the relay's life: dropping it ends every task.
    _rt: tokio::runtime::Runtime,
    url: String,
}

/// A simple query's COMMIT as a client sends it, and the server's tag
/// for it in its CommandComplete.
const COMMIT: &[u8] = b"COMMIT\0";

impl Relay {
    /// A relay in front of the server `url` names (a `key=value` string
    /// with `host` and `port`: a socket directory or a TCP host).
    pub fn start(url: &str) -> std::io::Result<Self> {
        let field = |name: &str| {
            url.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
        };
        let port = field("port").unwrap_or_else(|| "5432".into());
        let host = field("host").unwrap_or_else(|| "localhost".into());
        let upstream = match host.starts_with('/') {
            true => Upstream::Unix(format!("{host}/.s.PGSQL.{port}")),
            false => Upstream::Tcp(format!("{host}:{port}")),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(Mode::default());
        let relayed = mode.clone();
        rt.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), relayed.clone()));
            }
        });
        // The same settings, but over the relay.
        let mut fields: Vec<String> = url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
            .map(str::to_string)
            .collect();
        fields.push(format!("host=127.0.0.1 port={}", addr.port()));
        Ok(Self {
            mode,
            _rt: rt,
            url: fields.join(" "),
        })
    }

    /// The connection string of the database through the relay.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops forwarding, holding every connection open.
    pub fn freeze(&self) {
        self.mode.frozen.store(true, Ordering::SeqCst);
    }

    /// Lets the next COMMIT through and loses its reply.
    pub fn lose_next_commit_reply(&self) {
        self.mode.lose_commit_reply.store(true, Ordering::SeqCst);
    }
}

/// Forwards one connection both ways until either side closes, or a
/// COMMIT's reply is to be lost.
async fn relay(client: TcpStream, upstream: Upstream, mode: Arc<Mode>) {
    let _ = client.set_nodelay(true);
    let Ok((from_server, to_server)) = upstream.connect().await else {
        return;
    };
    let (from_client, to_client) = client.into_split();
    let committing = Arc::new(AtomicBool::new(false));
    let up = forward(
        Box::new(from_client),
        to_server,
        mode.clone(),
        committing.clone(),
        true,
    );
    let down = forward(from_server, Box::new(to_client), mode, committing, false);
    // The first direction to end ends both: the connection closes.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies `from` to `to` a chunk at a time, holding each while frozen.
/// Upward (`up`), the COMMIT to lose marks the connection; downward, the
/// reply to it ends the connection instead of being forwarded.
async fn forward(
    mut from: Reader,
    mut to: Writer,
    mode: Arc<Mode>,
    committing: Arc<AtomicBool>,
    up: bool,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while mode.frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let chunk = &buf[..n];
        let has_commit = chunk.windows(COMMIT.len()).any(|w| w == COMMIT);
        if up && has_commit && mode.lose_commit_reply.swap(false, Ordering::SeqCst) {
            committing.store(true, Ordering::SeqCst);
        }
        if !up && has_commit && committing.load(Ordering::SeqCst) {
            // The database committed; the hub never hears it.
            return;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}
