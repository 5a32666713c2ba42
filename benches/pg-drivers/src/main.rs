//! The PostgreSQL drivers Sluice could use, measured on the shapes of statement its job
//! path sends, against one server, in one run, alternated (each round begins with
//! another):
//!
//! - **postgres**: the blocking client (tokio-postgres's protocol code behind a runtime
//!   of its own), what Sluice uses: each connection on a thread of its own;
//! - **tokio-postgres**: the async client; independent statements sent without waiting
//!   for each answer (pipelined), connections from a `deadpool-postgres` pool;
//! - **sqlx**: the async client, connections from its `PgPool`.
//!
//! The workloads, each a transaction per group of `--group` jobs:
//! - `insert`: new jobs, one `INSERT … SELECT FROM unnest($1, $2, …)` a group;
//! - `complete`: their ends, one `UPDATE … FROM unnest(…)` a group (as `steady.rs`);
//! - `per-row`: their ends as one `UPDATE` a row, in one transaction a group (the
//!   general path's shape, where pipelining is what a driver can offer);
//! - `reads`: `--readers` tasks reading one job by id each, as API reads do.
//!
//!   cargo run --release -- --url postgres://… [--jobs N] [--group N] [--rounds N]

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use futures::future::try_join_all;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    /// Jobs each workload writes or reads.
    #[arg(long, default_value_t = 100_000)]
    jobs: i64,
    /// Jobs a transaction.
    #[arg(long, default_value_t = 100)]
    group: i64,
    /// Concurrent readers in `reads`.
    #[arg(long, default_value_t = 4)]
    readers: i64,
    /// Rounds of every driver, alternated.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

const SCHEMA: &str = "
    DROP TABLE IF EXISTS bench_jobs;
    CREATE TABLE bench_jobs (
        id BIGINT PRIMARY KEY, org_id INT NOT NULL, status INT NOT NULL, payload BYTEA NOT NULL,
        created_at BIGINT NOT NULL, started_at BIGINT, completed_at BIGINT, fuel_used BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX bench_jobs_by_org_status ON bench_jobs (org_id, status, id);";

const INSERT: &str = "INSERT INTO bench_jobs (id, org_id, status, payload, created_at)
    SELECT id, 1, 0, payload, 1 FROM unnest($1::BIGINT[], $2::BYTEA[]) AS t(id, payload)";
const COMPLETE: &str =
    "UPDATE bench_jobs SET status = 30, started_at = 2, completed_at = 3, fuel_used = t.fuel
    FROM unnest($1::BIGINT[], $2::BIGINT[]) AS t(id, fuel) WHERE bench_jobs.id = t.id";
const PER_ROW: &str = "UPDATE bench_jobs SET status = 31, fuel_used = $2 WHERE id = $1";
const READ: &str = "SELECT id, status, payload FROM bench_jobs WHERE id = $1";

/// The groups of job ids, in order.
fn groups(args: &Args) -> Vec<Vec<i64>> {
    (0..args.jobs).collect::<Vec<_>>().chunks(args.group as usize).map(<[i64]>::to_vec).collect()
}

fn payloads(ids: &[i64]) -> Vec<Vec<u8>> {
    ids.iter().map(|_| vec![7u8; 45]).collect()
}

/// Jobs per second for each workload.
type Rates = [f64; 4];

fn rate(jobs: i64, started: Instant) -> f64 {
    jobs as f64 / started.elapsed().as_secs_f64()
}

fn blocking(args: &Args) -> Result<Rates> {
    let mut client = postgres::Client::connect(&args.url, postgres::NoTls)?;
    client.batch_execute(SCHEMA)?;
    let (insert, complete, per_row) =
        (client.prepare(INSERT)?, client.prepare(COMPLETE)?, client.prepare(PER_ROW)?);
    let mut rates = [0.0; 4];
    let started = Instant::now();
    for ids in groups(args) {
        let mut tx = client.transaction()?;
        tx.execute(&insert, &[&ids, &payloads(&ids)])?;
        tx.commit()?;
    }
    rates[0] = rate(args.jobs, started);
    let started = Instant::now();
    for ids in groups(args) {
        let mut tx = client.transaction()?;
        tx.execute(&complete, &[&ids, &ids])?;
        tx.commit()?;
    }
    rates[1] = rate(args.jobs, started);
    let started = Instant::now();
    for ids in groups(args) {
        let mut tx = client.transaction()?;
        for id in &ids {
            tx.execute(&per_row, &[id, id])?;
        }
        tx.commit()?;
    }
    rates[2] = rate(args.jobs, started);
    // Readers: a connection and a thread each, as Sluice's read connections.
    let started = Instant::now();
    let per_reader = args.jobs / args.readers;
    let threads: Vec<_> = (0..args.readers)
        .map(|r| {
            let url = args.url.clone();
            std::thread::spawn(move || -> Result<()> {
                let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
                let read = client.prepare(READ)?;
                for n in 0..per_reader {
                    client.query_one(&read, &[&(r * per_reader + n)])?;
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
    }
    rates[3] = rate(per_reader * args.readers, started);
    Ok(rates)
}

async fn pipelined(args: &Args) -> Result<Rates> {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(args.url.clone());
    let pool = config.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls)?;
    let mut client = pool.get().await?;
    client.batch_execute(SCHEMA).await?;
    let mut rates = [0.0; 4];
    let started = Instant::now();
    for ids in groups(args) {
        let tx = client.transaction().await?;
        let insert = tx.prepare_cached(INSERT).await?;
        tx.execute(&insert, &[&ids, &payloads(&ids)]).await?;
        tx.commit().await?;
    }
    rates[0] = rate(args.jobs, started);
    let started = Instant::now();
    for ids in groups(args) {
        let tx = client.transaction().await?;
        let complete = tx.prepare_cached(COMPLETE).await?;
        tx.execute(&complete, &[&ids, &ids]).await?;
        tx.commit().await?;
    }
    rates[1] = rate(args.jobs, started);
    let started = Instant::now();
    for ids in groups(args) {
        let tx = client.transaction().await?;
        let per_row = tx.prepare_cached(PER_ROW).await?;
        // Every row's statement sent before the first answer is read.
        let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 2]> =
            ids.iter().map(|id| [id as &(dyn tokio_postgres::types::ToSql + Sync), id]).collect();
        try_join_all(params.iter().map(|p| tx.execute(&per_row, p))).await?;
        tx.commit().await?;
    }
    rates[2] = rate(args.jobs, started);
    drop(client);
    let started = Instant::now();
    let per_reader = args.jobs / args.readers;
    let readers = (0..args.readers).map(|r| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for n in 0..per_reader {
                let client = pool.get().await?;
                let read = client.prepare_cached(READ).await?;
                client.query_one(&read, &[&(r * per_reader + n)]).await?;
            }
            anyhow::Ok(())
        })
    });
    for reader in try_join_all(readers).await? {
        reader?;
    }
    rates[3] = rate(per_reader * args.readers, started);
    Ok(rates)
}

async fn sqlx(args: &Args) -> Result<Rates> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.readers as u32)
        // Its default pings the server at every acquire: a round trip the others do not make.
        .test_before_acquire(false)
        .connect(&args.url)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    let mut rates = [0.0; 4];
    let started = Instant::now();
    for ids in groups(args) {
        let mut tx = pool.begin().await?;
        sqlx::query(INSERT).bind(&ids).bind(payloads(&ids)).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    rates[0] = rate(args.jobs, started);
    let started = Instant::now();
    for ids in groups(args) {
        let mut tx = pool.begin().await?;
        sqlx::query(COMPLETE).bind(&ids).bind(&ids).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    rates[1] = rate(args.jobs, started);
    let started = Instant::now();
    for ids in groups(args) {
        let mut tx = pool.begin().await?;
        // sqlx runs one statement at a time on a connection.
        for id in &ids {
            sqlx::query(PER_ROW).bind(id).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    rates[2] = rate(args.jobs, started);
    let started = Instant::now();
    let per_reader = args.jobs / args.readers;
    let readers = (0..args.readers).map(|r| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for n in 0..per_reader {
                sqlx::query(READ).bind(r * per_reader + n).fetch_one(&pool).await?;
            }
            anyhow::Ok(())
        })
    });
    for reader in try_join_all(readers).await? {
        reader?;
    }
    rates[3] = rate(per_reader * args.readers, started);
    Ok(rates)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let workloads = ["insert", "complete", "per-row", "reads"];
    let drivers = ["postgres", "tokio-postgres", "sqlx"];
    let mut all: Vec<Vec<Rates>> = vec![Vec::new(); drivers.len()];
    println!(
        "{} jobs a workload, {} a transaction, {} readers; {} round(s), drivers alternated; jobs/s",
        args.jobs, args.group, args.readers, args.rounds
    );
    for round in 1..=args.rounds {
        // Each round starts with another driver, so that none always runs first.
        for d in (0..drivers.len()).map(|i| (i + round as usize - 1) % drivers.len()) {
            let driver = &drivers[d];
            let rates = match *driver {
                "postgres" => blocking(&args)?,
                "tokio-postgres" => runtime.block_on(pipelined(&args))?,
                _ => runtime.block_on(sqlx(&args))?,
            };
            println!(
                "round {round} {driver:<15} {}",
                workloads
                    .iter()
                    .zip(rates)
                    .map(|(w, r)| format!("{w} {r:>9.0}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
            all[d].push(rates);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut json = serde_json::Map::new();
    for (d, driver) in drivers.iter().enumerate() {
        let medians: serde_json::Map<String, serde_json::Value> = workloads
            .iter()
            .enumerate()
            .map(|(w, name)| (name.to_string(), median(all[d].iter().map(|r| r[w]).collect()).round().into()))
            .collect();
        json.insert(driver.to_string(), medians.into());
    }
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}
