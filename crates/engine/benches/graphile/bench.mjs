// Graphile Worker, side by side with the idempipe engine bench (benches/throughput).
//   node bench.mjs setup URL SCHEMA JOBS          migrate and queue JOBS no-op jobs
//   node bench.mjs work URL SCHEMA CONCURRENCY    prints "ready", starts on a "go" line on
//                                                 stdin, prints "completed N" every 5 ms,
//                                                 stops when stdin closes
// Completion batching and the local queue are on: the fastest settings Graphile documents.
import { createInterface } from "node:readline";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

// Warnings and errors only: per-job logging would be measured as queue work.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(message);
});

const [mode, connectionString, schema, n] = process.argv.slice(2);

if (mode === "setup") {
  const utils = await makeWorkerUtils({ connectionString, schema, logger });
  await utils.migrate();
  await utils.withPgClient((client) =>
    client.query(
      `SELECT ${schema}.add_jobs(ARRAY(
         SELECT ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::${schema}.job_spec
         FROM generate_series(1, $1::int)))`,
      [Number(n)],
    ),
  );
  await utils.release();
} else if (mode === "work") {
  const concurrency = Number(n);
  const lines = createInterface({ input: process.stdin });
  const go = new Promise((resolve) => lines.once("line", resolve));
  const closed = new Promise((resolve) => lines.once("close", resolve));
  console.log("ready");
  await go;
  let completed = 0;
  const runner = await run({
    taskList: { noop: async () => {} },
    noHandleSignals: true,
    preset: {
      worker: {
        connectionString,
        schema,
        logger,
        concurrentJobs: concurrency,
        maxPoolSize: Math.max(10, concurrency + 2),
        pollInterval: 100,
        localQueue: { size: concurrency + 1 },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
  });
  // job:success fires when the handler returns; the batched completion commits just after.
  runner.events.on("job:complete", () => {
    completed += 1;
  });
  const report = setInterval(() => console.log(`completed ${completed}`), 5);
  await closed;
  clearInterval(report);
  await runner.stop();
} else {
  console.error("usage: bench.mjs setup URL SCHEMA JOBS | work URL SCHEMA CONCURRENCY");
  process.exit(2);
}
