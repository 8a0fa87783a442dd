#!/usr/bin/env node
// pgjq example worker in Node.js (pg): scores ad copy.
//
//   npm ci
//   PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... \
//       node worker.js scoring --batch 10 --lease-seconds 60
//
// Connects with the standard libpq environment variables (pg reads them too)
// and waits for jobs inside CALL jq.jq_wait_dequeue (a long poll that holds
// no snapshot while it waits, and works through a transaction-pooling
// PgBouncer: pg prepares no statement unless told to), or with --listen
// LISTENs on jq_<queue> and leases with jq_dequeue; scores the payload's
// "copy" string (rules in ../README.md), extends the leases while the
// (simulated) work runs long, acks with the score, and fails malformed
// payloads permanently.  Exits on SIGTERM/SIGINT, or after --exit-when-idle
// seconds without a job.
'use strict';

const { Client, Connection } = require('pg');

const LANG = 'node';

// --- the scoring rules: keep them the same in all three workers ------------

const BANNED = ['guaranteed', 'miracle', 'cure', 'winner'];
const CALLS_TO_ACTION = ['buy', 'shop', 'order', 'book'];

class BadInput extends Error {}

function scoreCopy(copy) {
  const length = [...copy].length; // Unicode code points, not UTF-16 units
  const lower = copy.replace(/[A-Z]/g, (c) => c.toLowerCase()); // ASCII only
  const words = new Set(lower.match(/[a-z0-9]+/g) || []);
  let score = 50;
  const reasons = [];
  if (length < 20) {
    score -= 20;
    reasons.push('too_short');
  } else if (length > 150) {
    score -= 10;
    reasons.push('too_long');
  } else {
    score += 10;
    reasons.push('good_length');
  }
  for (const word of BANNED) {
    if (words.has(word)) {
      score -= 25;
      reasons.push(`banned:${word}`);
    }
  }
  const cta = CALLS_TO_ACTION.find((w) => words.has(w));
  if (cta) {
    score += 20;
    reasons.push(`call_to_action:${cta}`);
  } else {
    score -= 10;
    reasons.push('no_call_to_action');
  }
  return { score: Math.max(0, Math.min(100, score)), reasons };
}

function copyOf(payload) {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload) ||
      typeof payload.copy !== 'string') {
    throw new BadInput('payload has no "copy" string');
  }
  return payload.copy;
}

// --- the worker -------------------------------------------------------------

function log(msg) {
  process.stderr.write(`[${LANG}] ${msg}\n`);
}

function usage(msg) {
  process.stderr.write(`${msg}\nusage: node worker.js QUEUE [--batch N] [--lease-seconds N] ` +
    '[--work-ms N] [--poll-seconds S] [--exit-when-idle S] [--listen]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const num = (name, dflt) => (process.env[name] ? Number(process.env[name]) : dflt);
  const opts = {
    queue: process.env.JQ_QUEUE,
    batch: num('JQ_BATCH', 10),
    leaseSeconds: num('JQ_LEASE_SECONDS', 60),
    workMs: num('JQ_WORK_MS', 0),
    pollSeconds: num('JQ_POLL_SECONDS', 10),
    exitWhenIdle: num('JQ_EXIT_WHEN_IDLE', 0),
    listen: Boolean(num('JQ_LISTEN', 0)),
  };
  const flags = {
    '--batch': 'batch', '--lease-seconds': 'leaseSeconds', '--work-ms': 'workMs',
    '--poll-seconds': 'pollSeconds', '--exit-when-idle': 'exitWhenIdle',
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '-h' || arg === '--help') usage('pgjq example worker: scores ad copy');
    if (arg === '--listen') {
      opts.listen = true;
    } else if (flags[arg]) {
      if (value === undefined) value = argv[++i];
      const n = Number(value);
      if (value === undefined || !Number.isFinite(n)) usage(`${arg} needs a number`);
      opts[flags[arg]] = n;
    } else if (!arg.startsWith('-')) {
      opts.queue = arg;
    } else {
      usage(`unknown option ${arg}`);
    }
  }
  if (!opts.queue || !/^[a-z][a-z0-9_]{0,47}$/.test(opts.queue)) {
    usage('a queue name is required: a lowercase letter, then [a-z0-9_], at most 48');
  }
  if (!Number.isInteger(opts.batch) || opts.batch < 1 ||
      !Number.isInteger(opts.leaseSeconds) || opts.leaseSeconds < 1 || opts.workMs < 0) {
    usage('--batch and --lease-seconds must be positive integers, --work-ms not negative');
  }
  if (!(opts.pollSeconds > 0 && opts.pollSeconds <= 300)) {
    usage('--poll-seconds must be above 0 and at most 300');
  }
  return opts;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => Number(process.hrtime.bigint() / 1000000n); // monotonic ms

class Worker {
  constructor(opts) {
    this.opts = opts;
    this.lease = opts.leaseSeconds;
    this.stopping = false;
    this.woken = false;
    this.wake = null; // resolves the current wait, if any
    this.polling = false; // a long poll is running
    this.counts = { acked: 0, failed: 0, extended: 0, lost: 0 };
    // pg reads PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ...
    this.client = new Client({ application_name: `pgjq-worker-${LANG}` });
    this.client.on('notification', () => this.poke());
    this.client.on('error', (err) => {
      log(`connection error: ${err.message}`);
      process.exit(1);
    });
  }

  poke() {
    this.woken = true;
    if (this.wake) this.wake();
  }

  stop(signal) {
    log(`got ${signal}, stopping after the current job`);
    this.stopping = true;
    if (this.wake) this.wake();
    if (this.polling) this.cancelPoll();
  }

  // ends a long poll now, not when it times out: a cancel request on a new
  // connection, as psql's ^C sends it (PgBouncer passes it on)
  cancelPoll() {
    const { host, port } = this.client.connectionParameters;
    const con = new Connection();
    con.on('connect', () => con.cancel(this.client.processID, this.client.secretKey));
    con.on('error', (err) => log(`cancel: ${err.message}`));
    if (host && host.startsWith('/')) con.connect(`${host}/.s.PGSQL.${port}`);
    else con.connect(port, host);
  }

  // waits for a notification, a signal or the timeout
  wait(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  async query(sql, params) {
    return (await this.client.query(sql, params)).rows;
  }

  async run() {
    await this.client.connect();
    if (this.opts.listen) await this.runListening();
    else await this.runLongPolling();
    const c = this.counts;
    log(`done: ${c.acked} acked, ${c.failed} failed, ${c.extended} lease extensions, ` +
      `${c.lost} leases lost`);
    await this.client.end();
  }

  // Each call leases up to --batch jobs, waiting up to --poll-seconds for the
  // first; woken by the commit that makes a job ready.
  async runLongPolling() {
    let idleSince = now();
    while (!this.stopping) {
      let wait = this.opts.pollSeconds;
      if (this.opts.exitWhenIdle > 0) {
        const idle = (now() - idleSince) / 1000;
        if (idle >= this.opts.exitWhenIdle) {
          log(`idle for ${idle.toFixed(1)} s, exiting`);
          break;
        }
        wait = Math.min(wait, this.opts.exitWhenIdle - idle);
      }
      const leasedAt = now();
      let rows;
      this.polling = true;
      try {
        rows = await this.query(
          'CALL jq.jq_wait_dequeue($1, $2, $3, make_interval(secs => $4), NULL)',
          [this.opts.queue, this.opts.batch, this.lease, wait]);
      } catch (err) {
        if (this.stopping && err.code === '57014') break; // our own cancel
        throw err;
      } finally {
        this.polling = false;
      }
      // jobs: JSON numbers (exact: ids and tokens stay below 2^53); kept as
      // strings, as the bigint columns of a query come
      const jobs = rows[0].jobs.map((j) => ({ ...j, job_id: String(j.job_id),
        lease_token: String(j.lease_token) }));
      if (jobs.length > 0) {
        await this.work(jobs, leasedAt);
        idleSince = now();
      }
    }
  }

  async runListening() {
    await this.client.query(`LISTEN jq_${this.opts.queue}`); // the name is checked
    let idleSince = now();
    while (!this.stopping) {
      this.woken = false;
      const leasedAt = now();
      const jobs = await this.query(
        'SELECT job_id, lease_token, attempt, payload FROM jq.jq_dequeue($1, $2, $3)',
        [this.opts.queue, this.opts.batch, this.lease]);
      if (jobs.length > 0) {
        await this.work(jobs, leasedAt);
        idleSince = now();
        continue;
      }
      if (this.woken) continue; // a wakeup came in while we were busy
      const idle = (now() - idleSince) / 1000;
      let timeout = this.opts.pollSeconds;
      if (this.opts.exitWhenIdle > 0) {
        if (idle >= this.opts.exitWhenIdle) {
          log(`idle for ${idle.toFixed(1)} s, exiting`);
          break;
        }
        timeout = Math.min(timeout, this.opts.exitWhenIdle - idle);
      }
      await this.wait(timeout * 1000);
    }
  }

  async work(jobs, leasedAt) {
    // bigint ids and tokens stay strings: JavaScript numbers would round them
    const held = new Map(jobs.map((j) => [j.job_id, { token: j.lease_token, renewedAt: leasedAt }]));
    for (const job of jobs) {
      const id = job.job_id;
      const token = job.lease_token;
      if (!held.has(id)) continue; // its lease was lost while we worked on another
      if (this.stopping) {
        // give back what we have not started: ready again at once
        for (const [jid, h] of held) {
          await this.fail(jid, h.token, 'worker shutting down', { retryIn: '0' });
        }
        held.clear();
        return;
      }
      try {
        const copy = copyOf(job.payload);
        await this.simulateWork(held);
        if (!held.has(id)) continue;
        const { score, reasons } = scoreCopy(copy);
        const [{ ok }] = await this.query('SELECT jq.jq_ack($1, $2, $3) AS ok',
          [id, token, JSON.stringify({ score, reasons, worker: LANG })]);
        if (ok) {
          this.counts.acked++;
          log(`job ${id} (attempt ${job.attempt}) scored ${score}`);
        } else {
          this.counts.lost++;
          log(`job ${id}: ack refused, the lease was lost; result dropped`);
        }
      } catch (err) {
        if (err instanceof BadInput) {
          await this.fail(id, token, err.message, { permanent: true });
        } else {
          // anything unexpected: a retryable failure (if the connection is
          // gone, this throws too and the worker exits)
          await this.fail(id, token, `${err.name}: ${err.message}`);
        }
      }
      held.delete(id);
    }
  }

  // sleeps --work-ms in slices, extending the held leases as it goes
  async simulateWork(held) {
    const end = now() + this.opts.workMs;
    for (;;) {
      await this.extendIfDue(held);
      const left = end - now();
      if (left <= 0) break;
      await sleep(Math.min(left, 50));
    }
  }

  async extendIfDue(held) {
    for (const [id, h] of held) {
      if (now() - h.renewedAt <= (this.lease * 1000) / 3) continue;
      const started = now();
      const [{ expires }] = await this.query('SELECT jq.jq_extend($1, $2, $3) AS expires',
        [id, h.token, this.lease]);
      if (expires === null) {
        this.counts.lost++;
        log(`job ${id}: lease lost or job cancelled, dropping it`);
        held.delete(id);
      } else {
        this.counts.extended++;
        h.renewedAt = started;
        log(`job ${id}: lease extended to ${expires.toISOString()}`);
      }
    }
  }

  async fail(id, token, error, { permanent = false, retryIn = null } = {}) {
    const [{ state }] = await this.query(
      'SELECT jq.jq_fail($1, $2, $3, retry_in => $4::interval, permanent => $5) AS state',
      [id, token, error, retryIn, permanent]);
    this.counts.failed++;
    log(`job ${id} failed (${error}): now ${state || 'not ours any more'}`);
  }
}

async function main() {
  const worker = new Worker(parseArgs(process.argv.slice(2)));
  process.on('SIGTERM', () => worker.stop('SIGTERM'));
  process.on('SIGINT', () => worker.stop('SIGINT'));
  await worker.run();
}

main().catch((err) => {
  log(`fatal: ${err.stack || err}`);
  process.exit(1);
});
