#!/usr/bin/python3
"""pgjq example worker in Python (psycopg 3): scores ad copy.

    PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... \
        /usr/bin/python3 worker.py scoring --batch 10 --lease-seconds 60

Connects with the standard libpq environment variables and waits for jobs
inside CALL jq.jq_wait_dequeue (a long poll that holds no snapshot while it
waits, and works through a transaction-pooling PgBouncer), or with --listen
LISTENs on jq_<queue> and leases with jq_dequeue; scores the payload's
"copy" string (rules in ../README.md), extends the leases while the
(simulated) work runs long, acks with the score, and fails malformed
payloads permanently.  Exits on SIGTERM/SIGINT, or after --exit-when-idle
seconds without a job.

Safe behind PgBouncer in transaction mode: psycopg's automatic prepared
statements are off (prepare_threshold=None), since PgBouncer before 1.21
hands a statement prepared on one server connection to other clients'
sessions (errors 26000, 42P05, 08P01, or the wrong statement run).
"""

import argparse
import os
import re
import select
import signal
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

LANG = "python"

# --- the scoring rules: keep them the same in all three workers ------------

BANNED = ("guaranteed", "miracle", "cure", "winner")
CALLS_TO_ACTION = ("buy", "shop", "order", "book")
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = str.maketrans(_UPPER, _UPPER.lower())


class BadInput(Exception):
    """The payload is malformed: no retry will fix it."""


def score_copy(copy):
    """Returns (score, reasons) for one piece of ad copy."""
    length = len(copy)                     # Unicode code points
    words = set(re.findall(r"[a-z0-9]+", copy.translate(_ASCII_LOWER)))
    score, reasons = 50, []
    if length < 20:
        score -= 20
        reasons.append("too_short")
    elif length > 150:
        score -= 10
        reasons.append("too_long")
    else:
        score += 10
        reasons.append("good_length")
    for word in BANNED:
        if word in words:
            score -= 25
            reasons.append("banned:" + word)
    cta = [w for w in CALLS_TO_ACTION if w in words]
    if cta:
        score += 20
        reasons.append("call_to_action:" + cta[0])
    else:
        score -= 10
        reasons.append("no_call_to_action")
    return max(0, min(100, score)), reasons


def copy_of(payload):
    if not isinstance(payload, dict) or not isinstance(payload.get("copy"), str):
        raise BadInput('payload has no "copy" string')
    return payload["copy"]


# --- the worker -------------------------------------------------------------

def log(msg):
    print(f"[{LANG}] {msg}", file=sys.stderr, flush=True)


def env_default(name, default, conv=int):
    value = os.environ.get(name)
    return conv(value) if value not in (None, "") else default


def parse_args():
    p = argparse.ArgumentParser(description="pgjq example worker: scores ad copy")
    p.add_argument("queue", nargs="?", default=os.environ.get("JQ_QUEUE"),
                   help="queue name (or $JQ_QUEUE)")
    p.add_argument("--batch", type=int, default=env_default("JQ_BATCH", 10),
                   help="jobs per jq.jq_dequeue (default 10)")
    p.add_argument("--lease-seconds", type=int, default=env_default("JQ_LEASE_SECONDS", 60),
                   help="lease asked of jq.jq_dequeue and jq.jq_extend (default 60)")
    p.add_argument("--work-ms", type=int, default=env_default("JQ_WORK_MS", 0),
                   help="simulated work per job, in milliseconds (default 0)")
    p.add_argument("--poll-seconds", type=float, default=env_default("JQ_POLL_SECONDS", 10, float),
                   help="longest wait of one call (or, with --listen, for a notification "
                        "before polling anyway), at most 300 (default 10)")
    p.add_argument("--listen", action="store_true", default=bool(env_default("JQ_LISTEN", 0)),
                   help="wait with LISTEN jq_<queue> instead of a long poll (not through "
                        "a transaction-pooling PgBouncer)")
    p.add_argument("--exit-when-idle", type=float,
                   default=env_default("JQ_EXIT_WHEN_IDLE", 0, float),
                   help="exit after this many seconds without a job (default 0: never)")
    args = p.parse_args()
    if not args.queue or not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", args.queue):
        p.error("a queue name is required: a lowercase letter, then [a-z0-9_], at most 48")
    if args.batch < 1 or args.lease_seconds < 1 or args.work_ms < 0:
        p.error("--batch and --lease-seconds must be positive, --work-ms not negative")
    if not 0 < args.poll_seconds <= 300:
        p.error("--poll-seconds must be above 0 and at most 300")
    return args


class Worker:
    def __init__(self, args):
        self.args = args
        self.stopping = False
        self.woken = False
        self.lease = args.lease_seconds
        self.in_wait = False
        # libpq reads PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ...;
        # no automatic prepared statements: safe behind any PgBouncer
        self.conn = psycopg.connect("", autocommit=True, client_encoding="UTF8",
                                    prepare_threshold=None,
                                    application_name=f"pgjq-worker-{LANG}")
        if args.listen:
            self.conn.add_notify_handler(self._on_notify)
            self.conn.execute(f"LISTEN jq_{args.queue}")   # the name is checked above
        self.counts = {"acked": 0, "failed": 0, "extended": 0, "lost": 0}
        # a signal writes a byte here, so that a wait on the socket ends at once
        self.signal_r, signal_w = os.pipe()
        os.set_blocking(signal_w, False)
        signal.set_wakeup_fd(signal_w)

    def _on_notify(self, notify):
        self.woken = True

    def stop(self, signum, frame):
        log(f"got signal {signum}, stopping after the current job")
        self.stopping = True
        if self.in_wait:
            self.conn.cancel()      # end the long poll now, not when it times out

    def run(self):
        if self.args.listen:
            self.run_listening()
        else:
            self.run_long_polling()
        log("done: {acked} acked, {failed} failed, {extended} lease extensions, "
            "{lost} leases lost".format(**self.counts))
        self.conn.close()

    def run_long_polling(self):
        """Each call leases up to --batch jobs, waiting up to --poll-seconds
        for the first; woken by the commit that makes a job ready."""
        idle_since = time.monotonic()
        while not self.stopping:
            wait = self.args.poll_seconds
            if self.args.exit_when_idle > 0:
                idle = time.monotonic() - idle_since
                if idle >= self.args.exit_when_idle:
                    log(f"idle for {idle:.1f} s, exiting")
                    break
                wait = min(wait, self.args.exit_when_idle - idle)
            leased_at = time.monotonic()
            self.in_wait = True
            try:
                if self.stopping:
                    break
                (jobs,) = self.conn.execute(
                    "CALL jq.jq_wait_dequeue(%s, %s, %s, make_interval(secs => %s), NULL)",
                    (self.args.queue, self.args.batch, self.lease, wait)).fetchone()
            except psycopg.errors.QueryCanceled:
                if self.stopping:
                    break           # our own cancel, at a signal
                raise
            finally:
                self.in_wait = False
            if jobs:
                self.work([(j["job_id"], j["lease_token"], j["attempt"], j["payload"])
                           for j in jobs], leased_at)
                idle_since = time.monotonic()

    def run_listening(self):
        idle_since = time.monotonic()
        while not self.stopping:
            self.woken = False
            leased_at = time.monotonic()
            jobs = self.conn.execute(
                "SELECT job_id, lease_token, attempt, payload FROM jq.jq_dequeue(%s, %s, %s)",
                (self.args.queue, self.args.batch, self.lease)).fetchall()
            if jobs:
                self.work(jobs, leased_at)
                idle_since = time.monotonic()
                continue
            if self.woken:          # a wakeup came in while we were busy
                continue
            idle = time.monotonic() - idle_since
            timeout = self.args.poll_seconds
            if self.args.exit_when_idle > 0:
                if idle >= self.args.exit_when_idle:
                    log(f"idle for {idle:.1f} s, exiting")
                    break
                timeout = min(timeout, self.args.exit_when_idle - idle)
            self.wait(timeout)

    def wait(self, timeout):
        """Waits for a notification on the socket, a signal, or the timeout.
        The next query reads whatever arrived (and runs _on_notify)."""
        ready, _, _ = select.select([self.conn.fileno(), self.signal_r], [], [],
                                    max(0.0, timeout))
        if self.signal_r in ready:
            os.read(self.signal_r, 64)     # a signal came: run() sees self.stopping

    def work(self, jobs, leased_at):
        # every job of the batch is ours until acked or failed: extend them all
        held = {job_id: [token, leased_at] for job_id, token, _, _ in jobs}
        for n, (job_id, token, attempt, payload) in enumerate(jobs):
            if job_id not in held:
                continue            # its lease was lost while we worked on another
            if self.stopping:
                # give back what we have not started: ready again at once
                for jid in list(held):
                    self.fail(jid, held.pop(jid)[0], "worker shutting down", retry_in="0")
                return
            try:
                copy = copy_of(payload)
                self.simulate_work(held)
                if job_id not in held:
                    continue
                score, reasons = score_copy(copy)
                ok = self.conn.execute(
                    "SELECT jq.jq_ack(%s, %s, %s)",
                    (job_id, token,
                     Jsonb({"score": score, "reasons": reasons, "worker": LANG}))).fetchone()[0]
                if ok:
                    self.counts["acked"] += 1
                    log(f"job {job_id} (attempt {attempt}) scored {score}")
                else:
                    self.counts["lost"] += 1
                    log(f"job {job_id}: ack refused, the lease was lost; result dropped")
            except BadInput as e:
                self.fail(job_id, token, str(e), permanent=True)
            except psycopg.OperationalError:
                raise               # the connection is gone: nothing to report to
            except Exception as e:  # anything unexpected: a retryable failure
                self.fail(job_id, token, f"{type(e).__name__}: {e}")
            held.pop(job_id, None)

    def simulate_work(self, held):
        """Sleeps --work-ms in slices, extending the held leases as it goes."""
        end = time.monotonic() + self.args.work_ms / 1000.0
        while True:
            self.extend_if_due(held)
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))

    def extend_if_due(self, held):
        for job_id, entry in list(held.items()):
            token, renewed_at = entry
            if time.monotonic() - renewed_at <= self.lease / 3.0:
                continue
            started = time.monotonic()
            expires = self.conn.execute("SELECT jq.jq_extend(%s, %s, %s)",
                                        (job_id, token, self.lease)).fetchone()[0]
            if expires is None:
                self.counts["lost"] += 1
                log(f"job {job_id}: lease lost or job cancelled, dropping it")
                del held[job_id]
            else:
                self.counts["extended"] += 1
                entry[1] = started
                log(f"job {job_id}: lease extended to {expires.isoformat()}")

    def fail(self, job_id, token, error, permanent=False, retry_in=None):
        state = self.conn.execute(
            "SELECT jq.jq_fail(%s, %s, %s, retry_in => %s::interval, permanent => %s)",
            (job_id, token, error, retry_in, permanent)).fetchone()[0]
        self.counts["failed"] += 1
        log(f"job {job_id} failed ({error}): now {state or 'not ours any more'}")


def main():
    args = parse_args()
    worker = Worker(args)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()


if __name__ == "__main__":
    main()
