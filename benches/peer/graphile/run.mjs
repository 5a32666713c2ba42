// Peer benchmark: Graphile Worker draining no-op jobs from PostgreSQL.
//
// Usage: DATABASE_URL=postgres://... node run.mjs [--jobs N] [--concurrency C]
//            [--local-queue S] [--max-pool-size P] [--complete-job-batch-delay MS]
//
// DATABASE_URL must point at an empty database (run.sh makes a fresh one).
// Prints a human summary and, as the last line, one JSON object.
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

// Graphile Worker logs one INFO line per completed job unless NO_LOG_SUCCESS is
// set; it reads the variable when its modules load, so set it before the
// (dynamic) import. This is the setting its docs recommend for throughput.
process.env.NO_LOG_SUCCESS = "1";
const { run, runMigrations, makeWorkerUtils, Logger } = await import(
  "graphile-worker"
);
const pg = (await import("pg")).default;

// The package's "exports" map hides package.json, so read it from disk.
const GW_VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/graphile-worker/package.json", import.meta.url), "utf8"),
).version;

function parseArgs(argv) {
  const opts = {
    jobs: 200000,
    concurrency: 24,
    localQueue: 1000,
    maxPoolSize: null, // default: max(10, concurrency + 2), as the docs advise
    completeJobBatchDelay: -1, // library default: no batching of completions
  };
  const names = {
    "--jobs": "jobs",
    "--concurrency": "concurrency",
    "--local-queue": "localQueue",
    "--max-pool-size": "maxPoolSize",
    "--complete-job-batch-delay": "completeJobBatchDelay",
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split("=", 2);
    if (flag === "--help" || flag === "-h") {
      console.log(
        "node run.mjs [--jobs N] [--concurrency C] [--local-queue S] " +
          "[--max-pool-size P] [--complete-job-batch-delay MS]",
      );
      process.exit(0);
    }
    const key = names[flag];
    if (!key) throw new Error(`unknown argument: ${argv[i]}`);
    if (value === undefined) value = argv[++i];
    const n = Number(value);
    if (!Number.isInteger(n)) throw new Error(`${flag} needs an integer, got ${value}`);
    opts[key] = n;
  }
  if (opts.jobs < 1) throw new Error("--jobs must be >= 1");
  if (opts.concurrency < 1) throw new Error("--concurrency must be >= 1");
  if (opts.maxPoolSize == null) opts.maxPoolSize = Math.max(10, opts.concurrency + 2);
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error("DATABASE_URL is not set");
  process.exit(2);
}

// Keep warnings and errors; drop info/debug chatter so the output is the summary.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker ${level}] ${message}`);
});

const ENQUEUE_BATCH = 10000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const client = new pg.Client({ connectionString });
  await client.connect();
  const q1 = async (sql) => (await client.query(sql)).rows[0];
  const server = {
    version: (await q1("show server_version")).server_version,
    fsync: (await q1("show fsync")).fsync,
    synchronous_commit: (await q1("show synchronous_commit")).synchronous_commit,
  };

  // 1. Migrations (installs the graphile_worker schema).
  let t = performance.now();
  await runMigrations({ connectionString, logger });
  const migrateS = (performance.now() - t) / 1000;

  // 2. Enqueue N no-op jobs in batches of 10,000 via WorkerUtils.addJobs
  //    (one `graphile_worker.add_jobs(...)` call per batch).
  const utils = await makeWorkerUtils({ connectionString, logger });
  t = performance.now();
  try {
    for (let done = 0; done < opts.jobs; ) {
      const n = Math.min(ENQUEUE_BATCH, opts.jobs - done);
      const specs = new Array(n);
      for (let i = 0; i < n; i++) specs[i] = { identifier: "noop", payload: {} };
      await utils.addJobs(specs);
      done += n;
    }
  } finally {
    await utils.release();
  }
  const enqueueS = (performance.now() - t) / 1000;
  const queued = Number((await q1("select count(*)::bigint as n from graphile_worker.jobs")).n);
  if (queued !== opts.jobs) throw new Error(`expected ${opts.jobs} queued jobs, found ${queued}`);

  // 2b. Statistics for the jobs table, as a tuned deployment keeps them. Without this
  //     the drain depends on whether autovacuum happened to analyse the table filled a
  //     moment ago: one backend at 90% CPU planning against an empty table, 19,560
  //     jobs/s; with it, 54,928 (300,000 jobs, same server, 2026-11-26). Timed on its own.
  t = performance.now();
  await client.query("analyze graphile_worker._private_jobs");
  const analyzeS = (performance.now() - t) / 1000;

  // 3. Drain: start a runner and wait for N 'job:success' events, then wait
  //    for the last completions to reach the database (jobs table empty).
  let successes = 0;
  let failures = 0;
  let allSucceeded, jobFailed;
  const allSucceededP = new Promise((res, rej) => {
    allSucceeded = res;
    jobFailed = rej;
  });
  let tLastSuccess = 0;

  // Our own emitter, subscribed before the runner starts, so no early event
  // can be missed.
  const events = new EventEmitter();
  events.on("job:success", () => {
    if (++successes === opts.jobs) {
      tLastSuccess = performance.now();
      allSucceeded();
    }
  });
  events.on("job:error", ({ error }) => {
    failures++;
    jobFailed(new Error(`a noop job failed: ${error}`));
  });

  const t0 = performance.now();
  const runner = await run({
    connectionString,
    logger,
    events,
    concurrency: opts.concurrency,
    maxPoolSize: opts.maxPoolSize,
    noHandleSignals: true,
    // pollInterval: library default (2000 ms); new jobs are not the bottleneck
    // here since all N are queued before the runner starts.
    taskList: { noop: async () => {} },
    crontab: "",
    preset: {
      worker: {
        localQueue: { size: opts.localQueue },
        completeJobBatchDelay: opts.completeJobBatchDelay,
      },
    },
  });
  const runnerDied = runner.promise.then(
    () => {
      throw new Error("runner exited before all jobs completed");
    },
  );
  await Promise.race([allSucceededP, runnerDied]);

  // All tasks have returned; completeJob() calls may still be in flight.
  // Poll (cheaply, 10 ms) until the jobs table is empty, bounded to 60 s.
  let remaining = -1;
  for (let i = 0; i < 6000; i++) {
    remaining = Number((await q1("select count(*)::bigint as n from graphile_worker.jobs")).n);
    if (remaining === 0) break;
    await sleep(10);
  }
  const tDone = performance.now();
  await runner.stop();
  await client.end();
  if (remaining !== 0) throw new Error(`${remaining} jobs still in the table after drain`);
  if (failures) throw new Error(`${failures} job failures`);

  const drainS = (tDone - t0) / 1000;
  const result = {
    peer: "graphile-worker",
    version: GW_VERSION,
    jobs: opts.jobs,
    concurrency: opts.concurrency,
    local_queue: opts.localQueue,
    enqueue_per_s: Math.round(opts.jobs / enqueueS),
    jobs_per_s: Math.round(opts.jobs / drainS),
    node: process.version,
    max_pool_size: opts.maxPoolSize,
    complete_job_batch_delay: opts.completeJobBatchDelay,
    enqueue_s: +enqueueS.toFixed(3),
    analyze_s: +analyzeS.toFixed(3),
    drain_s: +drainS.toFixed(3),
    drain_to_last_success_s: +((tLastSuccess - t0) / 1000).toFixed(3),
    postgres: server.version,
    fsync: server.fsync,
    synchronous_commit: server.synchronous_commit,
  };

  console.log(`graphile-worker ${GW_VERSION} on node ${process.version}, PostgreSQL ${server.version} (fsync=${server.fsync}, synchronous_commit=${server.synchronous_commit})`);
  console.log(`settings: concurrency=${opts.concurrency} localQueue.size=${opts.localQueue} maxPoolSize=${opts.maxPoolSize} completeJobBatchDelay=${opts.completeJobBatchDelay} pollInterval=default`);
  console.log(`migrate:  ${migrateS.toFixed(3)} s`);
  console.log(`enqueue:  ${opts.jobs} jobs in ${enqueueS.toFixed(3)} s = ${result.enqueue_per_s} jobs/s (addJobs, batches of ${ENQUEUE_BATCH})`);
  console.log(`drain:    ${opts.jobs} no-op jobs in ${drainS.toFixed(3)} s = ${result.jobs_per_s} jobs/s (runner start -> jobs table empty; last job:success at ${result.drain_to_last_success_s} s)`);
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
