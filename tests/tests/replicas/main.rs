//! Several hub replicas on one PostgreSQL database (`[store] replica =
//! true`): one leader serves, the others wait as standbys and take over
//! when it stops, dies or loses the database; a leader that lost the lease
//! writes nothing more and stops, saying why.
//!
//! Runs only with a test PostgreSQL server (`TONGBAO_TEST_PG_URL`, see
//! .ci/postgres.sh); without one each test says it was skipped and passes
//! (but the first, of a hub on its own, which runs on either store).

mod clients;
mod common;
mod kill;
mod lost;
mod roles;
mod server;
mod standby;
mod standby_limits;
mod standby_unfit;
mod trail;
