//! `tsunagi bench search --db postgres://…`: the large region ingested again into a fresh
//! PostgreSQL schema and served the same way, its query latencies timed in alternating blocks
//! against the SQLite region of the same run, and its throughput beside SQLite's.

use crate::bench_search::{Region, load_region, rates, time_queries};

/// Serves the same region as `sqlite` (same size and seed) from a fresh schema of the
/// PostgreSQL at `db` and prints its figures beside SQLite's (`sqlite_read` and `sqlite_code`:
/// SQLite's throughput of this run, read by id and patient + code search).
pub(crate) async fn beside(
    db: &str,
    sqlite: &Region,
    seed: u64,
    requests: usize,
    sqlite_read: f64,
    sqlite_code: f64,
) -> anyhow::Result<()> {
    println!(
        "\nthe same region from PostgreSQL (a fresh schema of {}, dropped after)",
        crate::open::without_password(db)
    );
    crate::bench::in_fresh_schema(db, "search", |url| async move {
        let mut postgres = load_region(sqlite.patients, seed, Some(&url)).await?;
        let (timings, note, patient) = time_queries(sqlite, &postgres, requests).await?;
        println!(
            "{}",
            note.replace("the small region", "SQLite")
                .replace("the large", "PostgreSQL")
        );
        println!(
            "latency over one keep-alive connection per store, {requests} requests each, in alternating blocks of 30 (ms)"
        );
        println!(
            "  {:<42} {:>10} {:>10} {:>10} {:>10}",
            "query", "PG p50", "PG p95", "SQLite p50", "PG/SQLite"
        );
        for timing in &timings {
            println!(
                "  {:<42} {:>10.3} {:>10.3} {:>10.3} {:>10.2}",
                timing.name,
                timing.p50,
                timing.p95,
                timing.small_p50,
                if timing.small_p50 > 0.0 {
                    timing.p50 / timing.small_p50
                } else {
                    0.0
                }
            );
        }
        let mut connection = crate::bench_search::Connection::open(&postgres).await?;
        let (_, _, list) = crate::bench_search::queries(&mut connection, Some(&patient)).await?;
        let read = list.first().map(|q| q.1.clone()).unwrap_or_default();
        let code = list.get(4).map(|q| q.1.clone()).unwrap_or_default();
        let (read_rate, _) = rates(&postgres, &read, false).await?;
        let (code_rate, _) = rates(&postgres, &code, false).await?;
        println!("throughput, 8 keep-alive clients, secured, median of the same rounds");
        for (name, postgres_rate, sqlite_rate) in [
            ("read by id           ", read_rate, sqlite_read),
            ("patient + code search", code_rate, sqlite_code),
        ] {
            println!(
                "  {name}  PostgreSQL {postgres_rate:>8.0} req/s   SQLite {sqlite_rate:>8.0} req/s   ratio {:.2}",
                postgres_rate / sqlite_rate
            );
        }
        postgres.stop();
        anyhow::Ok(())
    })
    .await
}
