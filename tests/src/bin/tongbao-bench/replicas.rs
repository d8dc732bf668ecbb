//! The hubs of one run: one process, or with `--replicas N` N processes
//! on the run's PostgreSQL database. The first takes the database's lease
//! and serves; the others wait as standbys on addresses chosen before
//! they start, so that every client lists them all (leader first) and
//! fails over to whichever leads, as `hubs = [...]` in `client.toml` does.

use crate::hub::{HubChild, HubCounters};
use std::net::SocketAddr;
use std::time::Duration;
use tongbao_client::ClientConfig;
use tongbao_tests::{BoxError, TestPki};

/// The hub processes of a run.
pub struct Hubs {
    /// The one serving now.
    pub leader: HubChild,
    /// Replicas waiting for the lease, in the clients' order.
    standbys: Vec<HubChild>,
}

impl Hubs {
    /// Starts `replicas` hub processes (1: a hub on its own).
    pub fn start(pki: &TestPki, fsync: bool, replicas: usize) -> Result<Self, BoxError> {
        if replicas <= 1 {
            return Ok(Self {
                leader: HubChild::start(pki, fsync)?,
                standbys: Vec::new(),
            });
        }
        let (leader, leads) = HubChild::start_replica(pki, fsync, "replica-1", free_addr()?)?;
        if !leads {
            return Err(
                "the first replica found the lease held: is another hub on the run's database?"
                    .into(),
            );
        }
        let mut standbys = Vec::with_capacity(replicas - 1);
        for i in 2..=replicas {
            let name = format!("replica-{i}");
            let (standby, leads) = HubChild::start_replica(pki, fsync, &name, free_addr()?)?;
            if leads {
                return Err(format!("{name} took the lease the first replica holds").into());
            }
            standbys.push(standby);
        }
        Ok(Self { leader, standbys })
    }

    /// Every hub's address as a client lists it, leader first.
    fn urls(&self) -> Vec<String> {
        std::iter::once(&self.leader)
            .chain(&self.standbys)
            .map(|h| format!("https://{}", h.addr))
            .collect()
    }

    /// A unit's client config listing every hub.
    pub fn unit_config(&self, pki: &TestPki, unit: &str) -> Result<ClientConfig, BoxError> {
        Ok(pki
            .unit_config(unit, self.leader.addr)?
            .with_hubs(self.urls())?)
    }

    /// An office's client config listing every hub.
    pub fn office_config(&self, pki: &TestPki, mechanism: &str) -> Result<ClientConfig, BoxError> {
        Ok(pki
            .office_config(mechanism, self.leader.addr)?
            .with_hubs(self.urls())?)
    }

    /// User + system CPU time of every hub process so far.
    pub fn cpu(&self) -> Result<Duration, BoxError> {
        std::iter::once(&self.leader)
            .chain(&self.standbys)
            .map(HubChild::cpu)
            .sum()
    }

    /// Kills the leader (SIGKILL) and returns when it is gone; the
    /// standbys, one of which takes over, are what [`Hubs::stop`] stops.
    pub fn kill_leader(self) -> Result<Survivors, BoxError> {
        self.leader.kill()?;
        Ok(Survivors(self.standbys))
    }

    /// Stops the standbys first (so that none takes over), then the
    /// leader; the group-commit counters of all, added up.
    pub fn stop(self) -> Result<HubCounters, BoxError> {
        let mut total = HubCounters::default();
        for hub in self
            .standbys
            .into_iter()
            .chain(std::iter::once(self.leader))
        {
            let c = hub.stop()?;
            total.batches += c.batches;
            total.appended += c.appended;
            total.largest_batch = total.largest_batch.max(c.largest_batch);
            total.commit_nanos += c.commit_nanos;
            total.access_rounds += c.access_rounds;
            total.access_waited += c.access_waited;
            total.access_records += c.access_records;
            total.access_nanos += c.access_nanos;
        }
        Ok(total)
    }
}

/// The replicas left once the leader was killed.
pub struct Survivors(Vec<HubChild>);

impl Survivors {
    /// Each one's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|h| h.addr).collect()
    }

    /// Stops each; the group-commit counters of all, added up.
    pub fn stop(self) -> Result<HubCounters, BoxError> {
        let mut total = HubCounters::default();
        for hub in self.0 {
            let c = hub.stop()?;
            total.batches += c.batches;
            total.appended += c.appended;
        }
        Ok(total)
    }
}

/// A loopback address free now, for a standby to serve on once it leads.
fn free_addr() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
