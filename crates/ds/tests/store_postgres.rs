//! The store conformance suite on PostgreSQL (a database of its own per
//! test, created and dropped).

mod common;
mod suite;

use common::PgDb;
use hsmls_ds::store::PostgresStore;

macro_rules! case {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let db = PgDb::create().await;
            let s = PostgresStore::connect(&db.url, 8).await.unwrap();
            suite::$name(&suite::sealed(s.clone())).await;
            s.pool().close().await;
        }
    )*};
}

case!(
    clients,
    key_packages,
    concurrent_claims,
    commits,
    messages,
    stored_once_and_acknowledged,
    welcomes_and_purge,
    races,
    another_key,
    mixed_messages,
    ordered_batch
);
