// node-postgres (pg) with its default settings, many connections at once, through pgward in transaction mode.
//
// Usage: node pg_test.js PORT USER DBNAME [HOST]
//
// pg prepares a query server-side the first time it runs with a `name`, and from then on only binds and
// executes that name on the same connection. Every client here uses the same names (q1, q2, ...) for SQL that
// differs per client, and its queries run on whichever server the pool hands out, so pgward has to keep each
// client's names apart and re-prepare them on other servers. Checked here:
//   * every result of named queries run many times by 20 concurrent pg.Client connections (q1 with different
//     SQL per client, q2 with the same SQL everywhere) and of unnamed parameterised queries;
//   * a named query that fails, and the connection still working afterwards;
//   * transactions: BEGIN / named INSERTs / SELECT / COMMIT (and ROLLBACK), rows read back;
//   * two pg.Pool instances whose pooled connections use the same statement name for different SQL.
// Any wrong result or unexpected error (42P05 "already exists" or 26000 "does not exist" above all) makes the
// program exit non-zero. On success it prints "OK <number of checks>".
'use strict';

let pg;
try {
  pg = require('pg');
} catch (e) {
  console.log(`FAIL the pg module is not installed (run "npm ci" in ${__dirname}): ${e.message}`);
  process.exit(2);
}

const CLIENTS = 20;
const ROUNDS = 30;
const POOL_TASKS = 60;

const [port, user, database, host = '127.0.0.1'] = process.argv.slice(2);
if (!port || !user || !database) {
  console.log('usage: node pg_test.js PORT USER DBNAME [HOST]');
  process.exit(2);
}
const config = { host, port: Number(port), user, database };

let checks = 0;
const failures = [];
function fail(message) {
  failures.push(message);
  if (failures.length <= 50) console.log(`FAIL ${message}`);
}
function expect(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g === w) {
    checks++;
  } else {
    fail(`${what}: got ${g}, want ${w}`);
  }
}
function describe(e) {
  return `${e.code ? `[${e.code}] ` : ''}${e.message}`;
}

// Where every client is, so that a hang can be told apart from a failure.
const progress = new Map();

async function worker(id, table) {
  const client = new pg.Client(config);
  client.on('error', (e) => fail(`client ${id}: connection error ${describe(e)}`));
  progress.set(id, 'connecting');
  await client.connect();
  try {
    for (let i = 0; i < ROUNDS; i++) {
      progress.set(id, `round ${i}`);
      // Same name in every client, different SQL in each.
      let r = await client.query({ name: 'q1', text: 'SELECT $1::int + ' + id + ' AS v', values: [i] });
      expect(`client ${id} round ${i} q1`, r.rows, [{ v: i + id }]);
      // Same name and the same SQL in every client.
      r = await client.query({ name: 'q2', text: "SELECT $1::text || '-' || $2::text AS s", values: [`c${id}`, i] });
      expect(`client ${id} round ${i} q2`, r.rows, [{ s: `c${id}-${i}` }]);
      // Several columns and rows.
      r = await client.query({
        name: 'q3',
        text: 'SELECT x, x * ' + (id + 1) + ' AS y FROM generate_series(1, $1::int) AS x ORDER BY x',
        values: [(i % 3) + 1],
      });
      expect(`client ${id} round ${i} q3`, r.rows,
        Array.from({ length: (i % 3) + 1 }, (_, k) => ({ x: k + 1, y: (k + 1) * (id + 1) })));
      // Unnamed extended-protocol query.
      r = await client.query('SELECT $1::int - ' + id + ' AS v', [i]);
      expect(`client ${id} round ${i} unnamed`, r.rows, [{ v: i - id }]);

      if (i % 5 === 0) {
        // A named query that fails; the next ones still work.
        try {
          await client.query({ name: 'div', text: 'SELECT 1 / $1::int AS v', values: [0] });
          fail(`client ${id} round ${i}: division by zero did not fail`);
        } catch (e) {
          expect(`client ${id} round ${i} div sqlstate`, e.code, '22012');
        }
        r = await client.query({ name: 'div', text: 'SELECT 1 / $1::int AS v', values: [1] });
        expect(`client ${id} round ${i} div ok`, r.rows, [{ v: 1 }]);
      }

      if (i % 3 === 0) {
        progress.set(id, `round ${i} transaction`);
        await client.query('BEGIN');
        for (let k = 0; k < 3; k++) {
          await client.query({
            name: 'ins',
            text: `INSERT INTO ${table} (cid, round, v) VALUES ($1, $2, $3)`,
            values: [id, i, `v${k}`],
          });
        }
        r = await client.query({
          name: 'sel',
          text: `SELECT v FROM ${table} WHERE cid = $1 AND round = $2 ORDER BY v`,
          values: [id, i],
        });
        expect(`client ${id} round ${i} rows in transaction`, r.rows, [{ v: 'v0' }, { v: 'v1' }, { v: 'v2' }]);
        await client.query('COMMIT');

        // A rolled back insert leaves nothing.
        await client.query('BEGIN');
        await client.query({
          name: 'ins',
          text: `INSERT INTO ${table} (cid, round, v) VALUES ($1, $2, $3)`,
          values: [id, i, 'gone'],
        });
        await client.query('ROLLBACK');
        r = await client.query({
          name: 'sel',
          text: `SELECT v FROM ${table} WHERE cid = $1 AND round = $2 ORDER BY v`,
          values: [id, i],
        });
        expect(`client ${id} round ${i} rows after commit`, r.rows, [{ v: 'v0' }, { v: 'v1' }, { v: 'v2' }]);

        // An error inside a transaction aborts it, as on PostgreSQL.
        await client.query('BEGIN');
        try {
          await client.query({ name: 'div', text: 'SELECT 1 / $1::int AS v', values: [0] });
          fail(`client ${id} round ${i}: division by zero in transaction did not fail`);
        } catch (e) {
          expect(`client ${id} round ${i} div in transaction`, e.code, '22012');
        }
        try {
          await client.query({ name: 'q1', text: 'SELECT $1::int + ' + id + ' AS v', values: [i] });
          fail(`client ${id} round ${i}: query in aborted transaction did not fail`);
        } catch (e) {
          expect(`client ${id} round ${i} aborted transaction`, e.code, '25P02');
        }
        await client.query('ROLLBACK');
      }
    }
    const r = await client.query({
      name: 'count',
      text: `SELECT count(*)::int AS n FROM ${table} WHERE cid = $1`,
      values: [id],
    });
    expect(`client ${id} committed rows`, r.rows, [{ n: 3 * Math.ceil(ROUNDS / 3) }]);
    progress.delete(id);
  } catch (e) {
    fail(`client ${id} (${progress.get(id)}): unexpected error ${describe(e)}\n${e.stack}`);
    progress.delete(id);
  } finally {
    await client.end().catch(() => {});
  }
}

// A pg.Pool whose pooled connections all use the name 'pq' for SQL specific to this pool.
async function poolWorker(which) {
  const pool = new pg.Pool({ ...config, max: 5 });
  pool.on('error', (e) => fail(`pool ${which}: idle client error ${describe(e)}`));
  try {
    const tasks = [];
    for (let t = 0; t < POOL_TASKS; t++) {
      tasks.push((async () => {
        const r = await pool.query({ name: 'pq', text: `SELECT $1::int * 1000 + ${which} AS v`, values: [t] });
        expect(`pool ${which} task ${t}`, r.rows, [{ v: t * 1000 + which }]);
      })().catch((e) => fail(`pool ${which} task ${t}: unexpected error ${describe(e)}`)));
    }
    await Promise.all(tasks);
  } finally {
    await pool.end();
  }
}

async function main() {
  console.log(`node ${process.version}, pg ${require('pg/package.json').version}, ${CLIENTS} clients`);
  const table = `drv_node_${process.pid}_${Date.now() % 1000000}`;
  const admin = new pg.Client(config);
  await admin.connect();
  await admin.query(`CREATE TABLE ${table} (cid int NOT NULL, round int NOT NULL, v text NOT NULL)`);
  try {
    const work = [];
    for (let id = 0; id < CLIENTS; id++) work.push(worker(id, table));
    work.push(poolWorker(1), poolWorker(2));
    await Promise.all(work);
    const r = await admin.query(`SELECT count(*)::int AS n FROM ${table}`);
    expect('total rows', r.rows, [{ n: CLIENTS * 3 * Math.ceil(ROUNDS / 3) }]);
  } finally {
    await admin.query(`DROP TABLE IF EXISTS ${table}`).catch((e) => fail(`drop table: ${describe(e)}`));
    await admin.end();
  }
  if (failures.length > 0) {
    console.log(`FAILED ${failures.length} of ${checks + failures.length} checks`);
    return 1;
  }
  console.log(`OK ${checks} checks`);
  return 0;
}

// Bounded: report which clients are stuck where instead of hanging until killed.
const watchdog = setTimeout(() => {
  console.log(`FAIL timed out; clients not finished: ${JSON.stringify([...progress.entries()])}`);
  process.exit(3);
}, 70000);

main().then(
  (code) => {
    clearTimeout(watchdog);
    process.exitCode = code;
  },
  (e) => {
    clearTimeout(watchdog);
    console.log(`FAIL unexpected error ${describe(e)}\n${e.stack}`);
    process.exitCode = 1;
  });
