//! The metrics that describe the hub's state rather than count events.
//!
//! Read when scraped, from cheap and bounded sources: open connections and
//! subscriptions, the journal directory (a few files: the background flush
//! retires them), free space, each channel's sizes. Two are too costly for
//! a scrape and are sampled by [`sample_in_background`] instead, every
//! `[metrics] sample_every_secs`: the unanswered overdue deliveries (an
//! audit scan, bounded like any audit, one at a time on a blocking thread:
//! never on the heavy pool, whose slots are the offices') and the CA
//! index's certificates (a file read). A checkpoint's age is measured by
//! the same task each second, from the moment its size was first seen.

use super::MetricsSection;
use crate::service::HubState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tongbao_proto::identity::Principal;

/// What the sampled metrics are read from.
pub struct Sources {
    /// Weak, so that a scrape connection left open never keeps the store
    /// (and its database) open after shutdown.
    pub state: std::sync::Weak<HubState>,
    /// The data directory (its journal and its disk).
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MechanismLabel {
    mechanism: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    party: String,
    serial: String,
}

type Seconds = Gauge<f64, AtomicU64>;

/// The sampled gauges, and what measuring checkpoint ages needs.
pub(super) struct Gauges {
    connections: Family<KindLabel, Gauge>,
    subscriptions: Family<KindLabel, Gauge>,
    journal_files: Gauge,
    journal_bytes: Gauge,
    refusing_writes: Gauge,
    disk_free: Gauge,
    disk_size: Gauge,
    channel_entries: Family<ChannelLabel, Gauge>,
    checkpoint_entries: Family<ChannelLabel, Gauge>,
    checkpoint_age: Family<ChannelLabel, Seconds>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    overdue: Family<MechanismLabel, Gauge>,
    /// Per channel, the latest checkpoint size seen and since when.
    checkpoints_seen: Mutex<HashMap<String, (u64, Instant)>>,
    /// One scrape at a time: each clears and refills families, then
    /// encodes them.
    pub(super) scrape: Mutex<()>,
}

impl Gauges {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let g = Self {
            connections: Family::default(),
            subscriptions: Family::default(),
            journal_files: Gauge::default(),
            journal_bytes: Gauge::default(),
            refusing_writes: Gauge::default(),
            disk_free: Gauge::default(),
            disk_size: Gauge::default(),
            channel_entries: Family::default(),
            checkpoint_entries: Family::default(),
            checkpoint_age: Family::default(),
            certificate_expiry: Family::default(),
            overdue: Family::default(),
            checkpoints_seen: Mutex::default(),
            scrape: Mutex::default(),
        };
        registry.register(
            "tongbao_open_connections",
            "Client TLS connections open now, by party kind",
            g.connections.clone(),
        );
        registry.register(
            "tongbao_open_subscriptions",
            "Subscribe streams open now, by party kind",
            g.subscriptions.clone(),
        );
        registry.register(
            "tongbao_journal_files",
            "Files of the commit journal (not yet retired by a flush)",
            g.journal_files.clone(),
        );
        registry.register(
            "tongbao_journal_bytes",
            "Bytes in the commit journal's files",
            g.journal_bytes.clone(),
        );
        registry.register(
            "tongbao_journal_refusing_writes",
            "1 while the commit journal refuses writes (a failed write, or the disk at [hub] min_free_mib) until a restart",
            g.refusing_writes.clone(),
        );
        registry.register(
            "tongbao_data_disk_free_bytes",
            "Bytes available on the disk of the data directory",
            g.disk_free.clone(),
        );
        registry.register(
            "tongbao_data_disk_size_bytes",
            "Total bytes of the disk of the data directory",
            g.disk_size.clone(),
        );
        registry.register(
            "tongbao_channel_entries",
            "Durable entries of each channel",
            g.channel_entries.clone(),
        );
        registry.register(
            "tongbao_checkpoint_entries",
            "Entries covered by each channel's latest signed checkpoint",
            g.checkpoint_entries.clone(),
        );
        registry.register(
            "tongbao_checkpoint_age_seconds",
            "Seconds since each channel's latest checkpoint was signed (counted from the hub's start for one signed before)",
            g.checkpoint_age.clone(),
        );
        registry.register(
            "tongbao_certificate_expiry_seconds",
            "Seconds until each current, unrevoked certificate of the CA index expires (negative once expired)",
            g.certificate_expiry.clone(),
        );
        registry.register(
            "tongbao_overdue_deliveries",
            "Deliveries to units past their acknowledgement deadline and still unanswered, per mechanism, over [metrics] overdue_window_days",
            g.overdue.clone(),
        );
        g
    }

    /// Reads the cheap sources now (under `scrape`).
    pub(super) fn refresh(&self, sources: &Sources) {
        let Some(state) = sources.state.upgrade() else {
            return;
        };
        self.connections.clear();
        match state.tls.connections().parties() {
            Ok(parties) => {
                for uri in parties {
                    let kind = Principal::from_uri(&uri).map_or("unknown", |p| kind_of(&p));
                    self.connections.get_or_create(&label(kind)).inc();
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the open connections"),
        }
        self.subscriptions.clear();
        for (party, open) in state.subscriptions.open_by_party() {
            self.subscriptions
                .get_or_create(&label(kind_named(&party)))
                .inc_by(open as i64);
        }
        let (files, bytes) = journal_files(&sources.data_dir.join("journal"));
        self.journal_files.set(files);
        self.journal_bytes.set(bytes);
        self.refusing_writes
            .set(i64::from(state.store.refuses_writes()));
        if let Ok(free) = fs2::available_space(&sources.data_dir) {
            self.disk_free.set(clamp(free));
        }
        if let Ok(total) = fs2::total_space(&sources.data_dir) {
            self.disk_size.set(clamp(total));
        }
        self.track_checkpoints(&state);
    }

    /// Reads every channel's sizes and notes when a checkpoint size is
    /// first seen; sets the channel gauges.
    fn track_checkpoints(&self, state: &HubState) {
        let sizes = match state.logs.sizes() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the channels' sizes");
                return;
            }
        };
        let now = Instant::now();
        let Ok(mut seen) = crate::fatal::lock(&self.checkpoints_seen, "metrics checkpoints") else {
            return;
        };
        for (channel, durable, signed) in sizes {
            let since = match seen.get(&channel) {
                Some((size, since)) if *size == signed => *since,
                _ => {
                    seen.insert(channel.clone(), (signed, now));
                    now
                }
            };
            let l = ChannelLabel { channel };
            self.channel_entries.get_or_create(&l).set(clamp(durable));
            self.checkpoint_entries.get_or_create(&l).set(clamp(signed));
            if signed > 0 {
                self.checkpoint_age
                    .get_or_create(&l)
                    .set(now.duration_since(since).as_secs_f64());
            }
        }
    }

    fn certificates(&self, pki_dir: &std::path::Path) {
        let index = match crate::pki::index::CaIndex::load(pki_dir) {
            Ok(Some(index)) => index,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the CA index");
                return;
            }
        };
        let now = crate::pki::index::now();
        self.certificate_expiry.clear();
        for cert in index
            .certificates
            .iter()
            .filter(|c| c.is_current() && c.revoked.is_none())
        {
            self.certificate_expiry
                .get_or_create(&CertificateLabels {
                    party: cert.party.uri(),
                    serial: cert.serial.clone(),
                })
                .set((cert.not_after - now).whole_seconds());
        }
    }
}

fn label(kind: &str) -> KindLabel {
    KindLabel {
        kind: kind.to_string(),
    }
}

/// The label of a party's kind.
fn kind_of(p: &Principal) -> &'static str {
    match p {
        Principal::Unit(_) => "unit",
        Principal::Office(_) => "office",
        Principal::Operator(_) => "operator",
        Principal::LeadingGroup => "leading-group",
    }
}

/// The kind of a party as its `Display` names it (how subscriptions are
/// keyed).
fn kind_named(shown: &str) -> &'static str {
    if shown.starts_with("unit ") {
        "unit"
    } else if shown.starts_with("office of ") {
        "office"
    } else if shown.starts_with("operator ") {
        "operator"
    } else if shown == Principal::LeadingGroup.to_string() {
        "leading-group"
    } else {
        "unknown"
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The journal's files and their bytes (0, 0 when it cannot be read).
fn journal_files(dir: &std::path::Path) -> (i64, i64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let (mut files, mut bytes) = (0i64, 0i64);
    for e in entries.flatten() {
        if let Ok(m) = e.metadata()
            && m.is_file()
        {
            files += 1;
            bytes = bytes.saturating_add(clamp(m.len()));
        }
    }
    (files, bytes)
}

/// Measures checkpoint ages each second, and samples the overdue
/// deliveries and the CA index every `sample_every_secs`, until shutdown.
pub async fn sample_in_background(
    metrics: Arc<super::HubMetrics>,
    state: Arc<HubState>,
    config: MetricsSection,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(config.sample_every_secs.max(1));
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample = tokio::time::interval(every);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let window_micros = i64::from(config.overdue_window_days) * 86_400 * 1_000_000;
    loop {
        tokio::select! {
            _ = second.tick() => metrics.sampled.track_checkpoints(&state),
            _ = sample.tick() => {
                let pki_dir = state.pki_dir.clone();
                let m = metrics.clone();
                let read = tokio::task::spawn_blocking(move || m.sampled.certificates(&pki_dir));
                if let Err(e) = read.await {
                    tracing::warn!(error = %e, "metrics: the CA index task failed");
                }
                sample_overdue(&metrics, &state, window_micros).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn sample_overdue(metrics: &super::HubMetrics, state: &Arc<HubState>, window_micros: i64) {
    let mechanisms: Vec<String> = match state.registry() {
        Ok(r) => r.mechanisms.keys().cloned().collect(),
        Err(_) => return,
    };
    let now = tongbao_proto::now_micros();
    let since = now.saturating_sub(window_micros);
    for mechanism in mechanisms {
        let s = state.clone();
        let m = mechanism.clone();
        // One scan at a time on a blocking thread of its own, not on the
        // heavy pool: a sample must never take a slot an office's query
        // needs (a full pool refuses queries at once).
        let counted = tokio::task::spawn_blocking(move || {
            crate::service::unanswered_overdue(&s, &m, since, now)
        })
        .await
        .unwrap_or_else(|e| Err(tonic::Status::internal(e.to_string())));
        match counted {
            Ok(n) => {
                metrics
                    .sampled
                    .overdue
                    .get_or_create(&MechanismLabel { mechanism })
                    .set(clamp(n));
            }
            Err(e) => tracing::warn!(
                %mechanism,
                error = %e.message(),
                "metrics: cannot count the overdue deliveries; the last count stays"
            ),
        }
    }
}
