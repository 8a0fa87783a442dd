#!/usr/bin/python3
"""pgjq launch-day replay: the program behind `make demo`.

The story.  An agency's creative scoring service scores ad copy for 14
client teams.  A normal day brings about 4,200 requests.  On a launch day
three clients (northwind, lumen, kestrel) submit most of 18,000 scoring
requests within 4 hours, each in a burst that ramps up, peaks and decays;
the other 11 clients keep a low background.  About 5% are urgent
(launch-blocking, priority 10), the rest standard (priority 0).  The
model endpoint takes 8 requests at a time, a few seconds each: roughly 5,000 requests
an hour, plenty for a normal day, a little more than this day's 4-hour
average (4,500 an hour), far less than a burst's peak (about 12,000 an
hour).  So a backlog builds in each burst and must clear after it.

The replay runs that day with the clock compressed by FACTOR (120: 4 hours
in 2 minutes, a 4-second inference in 33 ms).  Everything that runs is
real: producer threads call jq.jq_enqueue (one transaction each, with an
idempotency key), and the client of each launch-blocking request waits for
its result with CALL jq.jq_wait_result (4 simulated minutes at most, as
the agency's clients do); worker threads wait for jobs inside CALL
jq.jq_wait_dequeue (a long poll, no LISTEN), lease them for 2 seconds,
sleep for the compressed inference time, score the copy
with the rules of docs/workers/python/worker.py and jq_ack the result;
the background worker reclaims leases, sends wakeups, samples
jq.stats_history and raises alerts.  On the way:

  * ~3% of the submissions are resubmissions after a client-side timeout,
    carrying the first submission's idempotency key: pgjq returns the id
    it returned the first time and creates nothing;
  * ~0.5% of the payloads are malformed (no "copy"): workers fail them with
    permanent => true and they land in the dead letters at once;
  * a few "cold model" requests take minutes: their worker calls jq_extend
    every third of the lease;
  * at 10:05 worker w5 asks for 4 jobs (the endpoint's limit gives it what
    is free) and dies mid-inference (its connection
    closes with the leases held): the background worker reclaims them when
    the leases expire, and other workers redo them (attempt 2);
  * the queue has alert_depth_warning = 800: an alert is raised at each
    peak and cleared when the backlog drains.

Flow control: each request carries its client team as its job key.  The
model endpoint takes 8 requests at a time: the queue has max_in_flight 8
and fair share among the teams (fair => true, every team weight 1), and
ten workers long-poll it, so the limit, not the pool, decides how many
inferences run.  To show what fair share buys, every request also goes to
a second queue, scoring_fifo, with the same limit and its own ten workers
but without fair share (served in submission order, as before keys):
during the big clients' bursts the small teams' requests wait behind the
burst there, and not in scoring.  The report compares their time to
result, team by team, and checks that neither queue ever had more than 8
jobs in flight.

At the end it reads every job back with jq_result and checks, by counting,
that every job id the producers got back succeeded or is dead, that no job
was acked twice and that each job's attempts match the deliveries the
workers saw.  It prints "jobs lost: N" from that count and exits 1 when
any check fails.  It writes a depth-over-time chart (PNG, gnuplot) and
prints it as a sparkline.

Connects with the libpq environment variables (PGHOST, PGPORT, PGUSER,
PGDATABASE) as a superuser: it creates the extension and the queue, and
expects pgjq preloaded with pgjq.database naming the database and
pgjq.stats_interval = '1s' (test/bin/demo.sh sets that up).

    /usr/bin/python3 docs/demo/launch_day.py --chart bench/results/launch_day.png

With --router the database is a pgjq_proxy router over N pgjq shards
(proxy/pgjq_proxy, docs/scale-out.md; TAP 030 runs it so): the same day
through the router's jq functions, without CREATE EXTENSION (each shard has
pgjq), the shards' background workers checked in jq.worker_status.  The
router has no tables, so the report reads what it offers: jq_result per id
(the accounting and its checks as above), jq.queue_stats (summed over the
shards) and jq.key_stats (a key's row names its shard).  Through the
router the queues' limits hold per shard (max_in_flight 8 on each shard:
the check is that no shard had more than 8 in flight), fair share is among
the teams of each shard, a dequeue takes work from any shard, and every
call commits on its shard.  Alerts and jq.stats_history are kept by each
shard's background worker and are not shown.

--scale S replays a smaller (or larger) day: S times the requests, each
inference 1/S times as long and the alert threshold S times as high, so
the endpoint is as loaded as on the full day and the backlog has the same
shape, S times as deep (--scale 0.1 --factor 360: 1,800 requests, the
4 hours in 40 s).
"""

import argparse
import collections
import datetime
import importlib.util
import json
import math
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psycopg
from psycopg.types.json import Jsonb

# the scoring rules of the example worker, used as they are
_spec = importlib.util.spec_from_file_location(
    "pgjq_example_worker",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workers", "python", "worker.py"))
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
score_copy, copy_of, BadInput = _example.score_copy, _example.copy_of, _example.BadInput

# --- the day ------------------------------------------------------------------

QUEUE = "scoring"
COMPARE_QUEUE = "scoring_fifo"    # the same requests, without fair share
ENDPOINT = 8                      # the model endpoint's concurrent requests: max_in_flight
DAY_START = 9 * 3600              # the replay starts at 09:00 launch-day time
WINDOW = 4 * 3600                 # submissions arrive from 09:00 to 13:00
SUBMISSIONS = 18000               # all submissions, resubmissions included
RESUBMIT_SHARE = 0.03             # resubmitted after a timeout, same idempotency key
URGENT_SHARE = 0.05               # launch-blocking: priority 10
AWAIT_TIMEOUT = 240               # simulated seconds a client waits for an urgent result
AWAITERS = 4                      # clients awaiting urgent results, one at a time each
MALFORMED_SHARE = 0.005           # no "copy" field
BURSTS = [                        # client, requests, burst starts (min after 09:00), shape (min)
    ("northwind", 6000, 15, 13),  # request times: start + Gamma(k=2, shape): ramp, peak, decay
    ("lumen", 5000, 85, 11),
    ("kestrel", 4300, 155, 10),
]
BACKGROUND_CLIENTS = ["acme", "bluefin", "corvid", "dovetail", "ember", "fjord",
                      "granite", "harbor", "ironwood", "juniper", "marlow"]
INFERENCE_MEDIAN = 4.0            # seconds, log-normal
INFERENCE_SIGMA = 0.45
COLD_SHARE = 0.001                # a cold model: 100..240 s
URGENT, STANDARD = 10, 0
LEASE_SECONDS = 2                 # real seconds (4 simulated minutes at factor 120)
ALERT_WARNING = 800               # ready jobs
CRASH_AT = 65 * 60                # w5 dies at 10:05 ...
CRASH_WORKER, CRASH_JOBS = 5, 4   # ... holding the leases of 4 jobs

PRODUCTS = ["trail shoe", "espresso machine", "noise-cancelling headphones", "smartwatch",
            "rain jacket", "yoga mat", "standing desk", "air fryer", "travel backpack",
            "vitamin serum", "e-bike", "gaming chair", "sparkling water", "running app"]
PITCHES = [
    "Meet the new {p}. Shop now!",
    "The {p} everyone is talking about, guaranteed lowest price. Buy today",
    "{P}: lighter, stronger, yours.",
    "Free shipping on every {p} this week. Order today",
    "This {p} is a miracle for busy mornings",
    "{P}!",
    "Launch day: the {p} is here. Book a demo at your nearest store",
    "Be a winner with the new {p}, out today. Shop the launch",
    "Our {p} took three years of testing with athletes, commuters and parents, in rain, "
    "heat and snow, and it comes with a two-year warranty and free returns. Book a fitting",
    "Your mornings, upgraded: the {p} you did not know you needed",
]


def clock(sim_seconds):
    """hh:mm of the launch day for seconds after 09:00."""
    m = int((DAY_START + sim_seconds) // 60)
    return f"{m // 60:02d}:{m % 60:02d}"


class Submission:
    __slots__ = ("sim_t", "client", "key", "priority", "payload", "resubmit", "malformed")

    def __init__(self, sim_t, client, key, priority, payload, resubmit=False, malformed=False):
        self.sim_t, self.client, self.key, self.priority = sim_t, client, key, priority
        self.payload, self.resubmit, self.malformed = payload, resubmit, malformed


def plan_day(seed, scale=1.0):
    """The day's submissions, sorted by their time (seconds after 09:00);
    scale times as many as SUBMISSIONS."""
    rng = random.Random(seed)
    submissions = round(SUBMISSIONS * scale)
    resubmits = round(submissions * RESUBMIT_SHARE)
    originals = submissions - resubmits
    times = []                                   # (sim_t, client)
    for client, n, start, shape in BURSTS:
        for _ in range(round(n * scale)):
            while True:
                t = start * 60 + rng.gammavariate(2.0, shape * 60)
                if t < WINDOW:
                    break
            times.append((t, client))
    for _ in range(originals - len(times)):
        times.append((rng.uniform(0, WINDOW), rng.choice(BACKGROUND_CLIENTS)))
    times.sort()
    plan, seq = [], collections.Counter()
    for t, client in times:
        seq[client] += 1
        n = seq[client]
        product = rng.choice(PRODUCTS)
        copy = rng.choice(PITCHES).format(p=product, P=product.capitalize())
        malformed = rng.random() < MALFORMED_SHARE
        payload = {"client": client, "request": n}
        if malformed:
            payload["headline"] = copy           # the copy under the wrong name
        else:
            payload["copy"] = copy
        priority = URGENT if rng.random() < URGENT_SHARE else STANDARD
        plan.append(Submission(t, client, f"{client}:req-{n}", priority, payload,
                               malformed=malformed))
    # resubmissions after a client-side timeout: 45 s to 5 min later, same key
    originals_list = list(plan)
    added = 0
    while added < resubmits:
        o = rng.choice(originals_list)
        t = o.sim_t + rng.uniform(45, 300)
        if t >= WINDOW:
            continue
        plan.append(Submission(t, o.client, o.key, o.priority, o.payload, resubmit=True,
                               malformed=o.malformed))
        added += 1
    plan.sort(key=lambda s: s.sim_t)
    return plan


# --- shared state ---------------------------------------------------------------

class Accounting:
    """what the workers of one queue saw"""

    def __init__(self):
        self.deliveries = collections.Counter()
        self.acks = collections.Counter()
        self.acks_refused = 0
        self.finished = set()
        self.failed_permanent = 0
        self.extensions = 0
        self.extended_jobs = set()
        self.leases_lost = 0


class Replay:
    def __init__(self, args):
        self.args = args
        self.factor = args.factor
        self.router = args.router     # the database is a pgjq_proxy router
        self.shards = 1               # the router's shards (jq.worker_status)
        self.planned = 0              # submissions in the plan
        self.alert_warning = round(ALERT_WARNING * args.scale)
        self.t0_mono = None
        self.t0_wall = None
        self.stop_workers = threading.Event()
        self.lock = threading.Lock()
        self.submitted = 0
        self.submit_log = []          # (plan index, job id, latency s, lag s)
        self.producer_errors = []
        self.deliveries = collections.Counter()   # job id -> leases seen by workers
        self.acks = collections.Counter()         # job id -> jq_ack returned true
        self.acks_refused = 0
        self.finished = set()         # job ids acked, or failed into the dead letters
        self.failed_permanent = 0
        self.extensions = 0
        self.extended_jobs = set()
        self.leases_lost = 0
        self.worker_errors = []
        self.crash = None             # dict: worker, wall, jobs [(id, token, attempt)]
        self.alert_events = []        # (wall, payload dict)
        self.compare = Accounting()   # the workers of scoring_fifo
        self.compare_log = []         # (plan index, job id) in scoring_fifo
        self.awaits = queue.Queue()   # urgent job ids whose result a client awaits
        self.await_log = []           # (job id, state, waited s, lag after the ack s or None)
        self.await_errors = []

    def start(self):
        self.t0_mono = time.monotonic()
        self.t0_wall = time.time()

    def sim_now(self):
        return (time.monotonic() - self.t0_mono) * self.factor

    def sim_of_wall(self, wall):
        """simulated seconds after 09:00 for a wall-clock (epoch) time"""
        return (wall - self.t0_wall) * self.factor

    def connect(self, name):
        # no automatic prepared statements: safe behind a transaction-pooling PgBouncer
        return psycopg.connect("", autocommit=True, prepare_threshold=None,
                               application_name=f"launchday-{name}")


# --- producers --------------------------------------------------------------------

def producer(replay, name, items):
    """Submits its share of the plan, each at its time, one transaction each."""
    try:
        conn = replay.connect(name)
        for idx, sub in items:
            due = replay.t0_mono + sub.sim_t / replay.factor
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            started = time.perf_counter()
            job_id = conn.execute(
                "SELECT jq.jq_enqueue(%s, %s, priority => %s, idempotency_key => %s, key => %s)",
                (QUEUE, Jsonb(sub.payload), sub.priority, sub.key, sub.client)).fetchone()[0]
            latency = time.perf_counter() - started
            twin = conn.execute(
                "SELECT jq.jq_enqueue(%s, %s, priority => %s, idempotency_key => %s, key => %s)",
                (COMPARE_QUEUE, Jsonb(sub.payload), sub.priority, sub.key,
                 sub.client)).fetchone()[0]
            with replay.lock:
                replay.submit_log.append((idx, job_id, latency, max(0.0, -delay)))
                replay.compare_log.append((idx, twin))
                replay.submitted += 1
            if sub.priority == URGENT and not sub.resubmit:
                replay.awaits.put(job_id)   # its client waits for the result
        conn.close()
    except Exception as e:           # reported, and the accounting will show it
        replay.producer_errors.append(f"{name}: {type(e).__name__}: {e}")


def awaiter(replay, name):
    """A client of launch-blocking requests: waits for each one's result
    with CALL jq.jq_wait_result, woken by the ack's commit, up to 4
    simulated minutes (then it has the job's state, as a client that gives
    up would).  Records how long it waited and, for a result that came
    while it waited, how long after the ack it had it."""
    try:
        conn = replay.connect(name)
        timeout = AWAIT_TIMEOUT / replay.factor
        while True:
            job_id = replay.awaits.get()
            if job_id is None:
                break
            started = time.time()
            (res,) = conn.execute("CALL jq.jq_wait_result(%s, make_interval(secs => %s), NULL)",
                                  (job_id, timeout)).fetchone()
            back = time.time()
            lag = None
            if res and res.get("finished_at"):
                finished = datetime.datetime.fromisoformat(res["finished_at"]).timestamp()
                if finished > started:
                    lag = back - finished
            with replay.lock:
                replay.await_log.append((job_id, res and res["state"], back - started, lag))
        conn.close()
    except Exception as e:
        replay.await_errors.append(f"{name}: {type(e).__name__}: {e}")


# --- workers ------------------------------------------------------------------------

class Worker(threading.Thread):
    def __init__(self, replay, n, queue=QUEUE):
        compare = queue != QUEUE
        super().__init__(name=f"{'f' if compare else 'w'}{n}", daemon=True)
        self.replay, self.n, self.queue = replay, n, queue
        self.acct = replay.compare if compare else replay
        self.rng = random.Random((2000 if compare else 1000) + n)
        self.crash_pending = n == CRASH_WORKER and not compare
        self.conn = None

    def connect(self):
        self.conn = self.replay.connect(self.name)

    def inference_seconds(self):
        """simulated seconds of one inference"""
        if self.rng.random() < COLD_SHARE:
            return self.rng.uniform(100, 240)
        return self.rng.lognormvariate(math.log(INFERENCE_MEDIAN / self.replay.args.scale),
                                       INFERENCE_SIGMA)

    def dequeue(self, max_jobs, wait=1.0):
        """Leases up to max_jobs, waiting up to wait seconds for the first
        (a long poll that holds no snapshot while it waits)."""
        (jobs,) = self.conn.execute(
            "CALL jq.jq_wait_dequeue(%s, %s, NULL, make_interval(secs => %s), NULL)",
            (self.queue, max_jobs, wait)).fetchone()
        return [(j["job_id"], j["lease_token"], j["attempt"], j["payload"]) for j in jobs]

    def run(self):
        r = self.replay
        try:
            self.connect()
            while not r.stop_workers.is_set():
                if self.crash_pending and r.sim_now() >= CRASH_AT:
                    self.crash_pending = False
                    self.die()
                    continue
                for job in self.dequeue(1, wait=0.5):
                    self.work(*job)
            self.conn.close()
        except Exception as e:
            r.worker_errors.append(f"{self.name}: {type(e).__name__}: {e}")

    def die(self):
        """Leases CRASH_JOBS jobs and dies mid-inference: the connection
        closes with the leases held and nothing acked.  A supervisor starts
        the worker again a simulated minute later."""
        r = self.replay
        jobs = self.dequeue(CRASH_JOBS)
        while not jobs and not r.stop_workers.is_set():   # the endpoint is full: wait for a slot
            jobs = self.dequeue(CRASH_JOBS, wait=0.5)
        with r.lock:
            for job_id, _, _, _ in jobs:
                r.deliveries[job_id] += 1
        time.sleep(self.inference_seconds() / 2 / r.factor)   # halfway through the first
        wall = time.time()
        self.conn.close()                                       # no ack, no fail
        r.crash = {"worker": self.name, "wall": wall,
                   "jobs": [(j[0], j[1], j[2]) for j in jobs]}
        time.sleep(60 / r.factor)
        self.connect()

    def work(self, job_id, token, attempt, payload):
        r, a = self.replay, self.acct
        renewed = time.monotonic()
        with r.lock:
            a.deliveries[job_id] += 1
        try:
            copy = copy_of(payload)
        except BadInput as e:
            state = self.conn.execute("SELECT jq.jq_fail(%s, %s, %s, permanent => true)",
                                      (job_id, token, str(e))).fetchone()[0]
            with r.lock:
                a.failed_permanent += 1
                if state == "dead":
                    a.finished.add(job_id)
            return
        end = time.monotonic() + self.inference_seconds() / r.factor
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now - renewed > LEASE_SECONDS / 3:      # a heartbeat for long inference
                expires = self.conn.execute("SELECT jq.jq_extend(%s, %s)",
                                            (job_id, token)).fetchone()[0]
                if expires is None:
                    with r.lock:
                        a.leases_lost += 1
                    return
                renewed = now
                with r.lock:
                    a.extensions += 1
                    a.extended_jobs.add(job_id)
            time.sleep(min(end - now, LEASE_SECONDS / 3 - (now - renewed) + 0.001))
        score, reasons = score_copy(copy)
        ok = self.conn.execute("SELECT jq.jq_ack(%s, %s, %s)",
                               (job_id, token, Jsonb({"score": score, "reasons": reasons,
                                                      "worker": self.name}))).fetchone()[0]
        with r.lock:
            if ok:
                a.acks[job_id] += 1
                a.finished.add(job_id)
            else:
                a.acks_refused += 1


# --- the live line -------------------------------------------------------------------

class Monitor:
    """Samples jq.queue_stats a few times a second, prints the live line and
    the alerts as they come (LISTEN jq_alerts).  Through the router, also
    each shard's jobs in flight (jq.key_stats by shard), and no alerts: they
    are notified on each shard."""

    def __init__(self, replay):
        self.r = replay
        self.conn = replay.connect("monitor")
        if not replay.router:
            self.conn.add_notify_handler(self._on_alert)
            self.conn.execute("LISTEN jq_alerts")
        self.shard_in_flight = {QUEUE: 0, COMPARE_QUEUE: 0}   # router: the most on one shard
        self.samples = []    # (sim_t, urgent ready, standard ready, in flight, done, dead, scheduled)
        self.tty = sys.stdout.isatty()
        self.last_line = 0.0
        self.line_len = 0

    def _on_alert(self, notify):
        try:
            payload = json.loads(notify.payload)
        except ValueError:
            payload = {"raw": notify.payload}
        self.r.alert_events.append((time.time(), payload))
        if payload.get("queue") not in (None, QUEUE):
            return
        self._clear()
        print(f"  {clock(self.r.sim_now())}  ALERT {payload.get('state', '?')}: queue "
              f"{payload.get('queue')} {payload.get('kind')} {payload.get('level')} "
              f"(value {payload.get('value')}, threshold {payload.get('threshold')})", flush=True)

    def _clear(self):
        if self.tty and self.line_len:
            sys.stdout.write("\r" + " " * self.line_len + "\r")
            self.line_len = 0

    def all_done(self):
        """every job id the producers got back is acked or dead (the
        workers' own count, not pgjq's counters)"""
        with self.r.lock:
            ids = {x[1] for x in self.r.submit_log}
            twins = {x[1] for x in self.r.compare_log}
            return ids <= self.r.finished and twins <= self.r.compare.finished

    def sample(self):
        if self.r.router:
            # the router's queue_stats sums the shards (one look at all of
            # them per query); its key_stats names each key's shard
            stats = {row[0]: row[1:] for row in self.conn.execute(
                "SELECT queue, ready, scheduled, in_flight, dead, ready_by_priority, "
                "       succeeded_total "
                "  FROM jq.queue_stats WHERE queue IN (%s, %s)", (QUEUE, COMPARE_QUEUE))}
            ready, scheduled, in_flight, dead, lanes, done = stats[QUEUE]
            fifo_in_flight = stats[COMPARE_QUEUE][2]
            alerts = 0                   # on the shards, not here
            for q, _, n in self.conn.execute(
                    "SELECT queue, shard, sum(in_flight)::bigint FROM jq.key_stats "
                    " WHERE queue IN (%s, %s) GROUP BY 1, 2", (QUEUE, COMPARE_QUEUE)):
                self.shard_in_flight[q] = max(self.shard_in_flight[q], n)
        else:
            row = self.conn.execute(
                "SELECT ready, scheduled, in_flight, dead, ready_by_priority, succeeded_total, "
                "       (SELECT count(*) FROM jq.alert a WHERE a.queue = s.queue "
                "                                      AND a.cleared_at IS NULL), "
                "       (SELECT f.in_flight FROM jq.queue_stats f WHERE f.queue = %s) "
                "  FROM jq.queue_stats s WHERE queue = %s", (COMPARE_QUEUE, QUEUE)).fetchone()
            ready, scheduled, in_flight, dead, lanes, done, alerts, fifo_in_flight = row
        self.max_in_flight = max(getattr(self, "max_in_flight", 0), in_flight)
        self.max_fifo_in_flight = max(getattr(self, "max_fifo_in_flight", 0), fifo_in_flight)
        urgent = int(lanes.get(str(URGENT), 0))
        standard = int(lanes.get(str(STANDARD), 0))
        sim_t = self.r.sim_now()
        self.samples.append((sim_t, urgent, standard, in_flight, done, dead, scheduled))
        now = time.monotonic()
        every = 0.25 if self.tty else 5.0
        if now - self.last_line >= every:
            self.last_line = now
            line = (f"  {clock(sim_t)}  submitted {self.r.submitted:>6,}/{self.r.planned:,}"
                    f"  ready: urgent {urgent:>3} standard {standard:>5,}"
                    f"  in flight {in_flight:>2}  done {done:>6,}  dead {dead:>3}"
                    + (f"  shards {self.r.shards}" if self.r.router else f"  open alerts {alerts}"))
            if self.tty:
                width = shutil.get_terminal_size().columns - 1
                if len(line) > width:       # a wrapped line would defeat the \r
                    line = (f"{clock(sim_t)} sub {self.r.submitted:,} ready urg {urgent} "
                            f"std {standard:,} fly {in_flight} done {done:,} dead {dead} "
                            + (f"shards {self.r.shards}" if self.r.router
                               else f"alerts {alerts}"))[:width]
                sys.stdout.write("\r" + line.ljust(self.line_len))
                self.line_len = len(line)
                sys.stdout.flush()
            else:
                print(line, flush=True)
        return ready + scheduled + in_flight, alerts

    def finish(self):
        self._clear()


# --- the report ------------------------------------------------------------------------

def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values, width):
    """max per bucket, scaled to the overall max"""
    if not values:
        return ""
    buckets = [max(values[i * len(values) // width:max((i + 1) * len(values) // width,
                                                          i * len(values) // width + 1)])
               for i in range(width)]
    top = max(buckets) or 1
    return "".join(" " if v == 0 else BLOCKS[min(7, int(v / top * 7.999))] for v in buckets)


def write_chart(path, samples, plan, replay):
    """ready by lane over simulated time, with arrivals per simulated minute"""
    if not shutil.which("gnuplot"):
        return "gnuplot not found (apt-get install gnuplot-nox)"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="launchday-") as tmp:
        depth = os.path.join(tmp, "depth.dat")
        with open(depth, "w") as f:
            for sim_t, urgent, standard, in_flight, *_ in samples:
                f.write(f"{DAY_START + sim_t:.1f} {urgent} {standard} {in_flight}\n")
        arrivals = os.path.join(tmp, "arrivals.dat")
        per_min = collections.Counter(int(s.sim_t // 60) for s in plan)
        with open(arrivals, "w") as f:
            for m in range(0, int(samples[-1][0] // 60) + 1):
                f.write(f"{DAY_START + m * 60 + 30} {per_min.get(m, 0)}\n")
        end = DAY_START + samples[-1][0]
        crash_label = ""
        if replay.crash:
            at = DAY_START + replay.sim_of_wall(replay.crash["wall"])
            n = len(replay.crash["jobs"])
            crash_label = (f'set label "{replay.crash["worker"]} dies holding '
                           f'{n} lease{"s" if n != 1 else ""}: in flight until reclaimed" '
                           f'at "{at + 420:.0f}", {max(x[3] for x in samples) + 1} left')
        per_shard = " per shard" if replay.router else ""
        script = f"""
set terminal pngcairo size 1200,760 noenhanced font ",10"
set output '{path}'
set multiplot
set xdata time
set timefmt "%s"
set format x "%H:%M"
set xrange ["{DAY_START}":"{end:.0f}"]
set grid
set lmargin 10
set rmargin 10
# top: the standard backlog against the arrivals
set origin 0, 0.32
set size 1, 0.68
set title "pgjq launch-day replay: {len(plan):,} scoring requests of 14 client teams in 4 hours, endpoint limit {ENDPOINT}{per_shard}, fair share (time compressed x{replay.factor:g})"
set format x ""
set ylabel "ready jobs"
set y2label "requests submitted per minute"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key top right
plot '{depth}' using 1:3 with filledcurves x1 lc rgb "#9ecae1" title "standard lane ready (priority 0)", \\
     '{arrivals}' using 1:2 axes x1y2 with steps lc rgb "#555555" title "arrivals per minute (right axis)", \\
     {replay.alert_warning} with lines dt 2 lw 2 lc rgb "#ff7f0e" title "alert_depth_warning ({replay.alert_warning}{per_shard})"
# bottom: the urgent lane, and the pool at work
set origin 0, 0
set size 1, 0.34
unset title
set format x "%H:%M"
set xlabel "launch-day time (simulated)"
set ylabel "jobs"
unset y2label
unset y2tics
set ytics mirror
set yrange [0:{max(10, ENDPOINT + 3, max(x[3] for x in samples) + 2)}]
{crash_label}
set key top right
plot '{depth}' using 1:4 with lines lw 1 lc rgb "#2ca02c" title "in flight (leased by {replay.args.workers} workers)", \\
     {ENDPOINT} with lines dt 2 lw 2 lc rgb "#555555" title "the endpoint's limit (max_in_flight {ENDPOINT}{per_shard})", \\
     '{depth}' using 1:2 with lines lw 2 lc rgb "#d62728" title "urgent lane ready (priority 10)"
unset multiplot
"""
        p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
        if p.returncode != 0:
            return "gnuplot failed: " + p.stderr.strip()
    return None


def report(replay, plan, monitor, conn, elapsed):
    r, f = replay, replay.factor
    ok = True
    out = []

    def line(s=""):
        out.append(s)

    def sim(seconds):
        """a real duration as launch-day time"""
        t = seconds * f
        return f"{t:.0f} s" if t < 60 else f"{t / 60:.1f} min"

    def ms_min(secs, label):
        ms = [x * 1000 for x in secs]
        mean = sum(secs) / len(secs)
        return (f"  {label:<9} {len(ms):>6,} jobs  real: mean {mean * 1000:5.0f} ms, "
                f"p50 {pct(ms, 50):5.0f} ms, p95 {pct(ms, 95):5.0f} ms"
                f"   launch day: mean {sim(mean)}, p50 {sim(pct(secs, 50))}, "
                f"p95 {sim(pct(secs, 95))}")

    log = sorted(r.submit_log)
    ids = {}                       # job id -> plan index of its first submission
    absorbed = 0
    for idx, job_id, _, _ in log:
        if job_id in ids:
            absorbed += 1
        else:
            ids[job_id] = idx
    resubmits = sum(1 for s in plan if s.resubmit)
    lat = [x[2] * 1000 for x in log]
    lag = [x[3] * 1000 for x in log]

    rows = conn.execute(
        "SELECT r.job_id, r.state, r.attempts, r.priority, r.last_error, r.result, "
        "       extract(epoch FROM r.enqueued_at)::float8, extract(epoch FROM r.started_at)::float8, "
        "       extract(epoch FROM r.finished_at)::float8, extract(epoch FROM r.run_at)::float8 "
        "  FROM unnest(%s::bigint[]) AS i(id), LATERAL jq.jq_result(i.id) r",
        (list(ids),)).fetchall()
    res = {row[0]: row for row in rows}

    line("=" * 100)
    line(f"pgjq launch-day replay: 4 hours of launch day in {elapsed:.0f} s "
         f"(time compressed x{f:g}: 1 real second = {f / 60:g} launch-day minutes)")
    line("=" * 100)
    line()
    line(f"Submissions ({r.args.producers} producer threads, one jq_enqueue transaction each per queue, "
         "idempotency keys, the client team as job key)")
    urgent_n = sum(1 for s in plan if s.priority == URGENT and not s.resubmit)
    malformed_n = sum(1 for s in plan if s.malformed and not s.resubmit)
    line(f"  submitted {len(log):,} of {len(plan):,}: {len(ids):,} distinct jobs "
         f"({urgent_n:,} urgent, {len(ids) - urgent_n:,} standard, {malformed_n} malformed)")
    line(f"  submit latency (jq_enqueue + commit): p50 {pct(lat, 50):.2f} ms, "
         f"p99 {pct(lat, 99):.2f} ms, max {max(lat):.1f} ms")
    late = sum(1 for x in lag if x > 50)
    line(f"  producers kept to the arrival curve: {late} submissions more than 50 ms late "
         f"(max {max(lag):.0f} ms)")
    line(f"  duplicates absorbed by idempotency keys: {absorbed} "
         f"({resubmits} resubmissions after a client timeout; each got the id of its first "
         f"submission back)")
    if absorbed != resubmits:
        ok = False
        line("  ** CHECK FAILED: absorbed duplicates differ from the resubmissions")
    if pct(lat, 99) >= 100:
        line("  ** note: submit p99 is over 100 ms")
    line()

    line("Time to result (enqueued_at to finished_at, from jq_result; succeeded jobs)")
    by_lane = {URGENT: [], STANDARD: []}
    for row in rows:
        if row[1] == "succeeded":
            by_lane[row[3]].append(row[8] - row[6])
    line(ms_min(by_lane[URGENT], "urgent"))
    line(ms_min(by_lane[STANDARD], "standard"))
    line()

    line(f"Fair share and the endpoint's limit (job key: the client team; max_in_flight {ENDPOINT}, "
         f"{r.args.workers} workers per queue)")
    twins = {}                     # scoring_fifo job id -> plan index
    for idx, job_id in sorted(r.compare_log):
        twins.setdefault(job_id, idx)
    twin_rows = conn.execute(
        "SELECT r.job_id, r.state, r.attempts, r.priority, r.last_error, r.result, "
        "       extract(epoch FROM r.enqueued_at)::float8, extract(epoch FROM r.started_at)::float8, "
        "       extract(epoch FROM r.finished_at)::float8, r.key "
        "  FROM unnest(%s::bigint[]) AS i(id), LATERAL jq.jq_result(i.id) r",
        (list(twins),)).fetchall()

    def by_team(rows_, idmap):
        per = collections.defaultdict(list)
        for row in rows_:
            if row[1] == "succeeded" and row[3] == STANDARD:
                per[plan[idmap[row[0]]].client].append(row[8] - row[6])
        return per

    fair, fifo = by_team(rows, ids), by_team(twin_rows, twins)
    big = [c for c, _, _, _ in BURSTS]
    line(f"  standard jobs, time to result (launch-day time):    with fair share ({QUEUE})"
         f"      without ({COMPARE_QUEUE})")
    for label, clients in (("the 3 bursting clients", big), ("the 11 other teams", BACKGROUND_CLIENTS)):
        a = [x for c in clients for x in fair[c]]
        b = [x for c in clients for x in fifo[c]]
        line(f"  {label:<24} {len(a):>6,} jobs     p50 {sim(pct(a, 50)):>8}  p95 {sim(pct(a, 95)):>8}"
             f"        p50 {sim(pct(b, 50)):>8}  p95 {sim(pct(b, 95)):>8}")
    line("  per team:")
    for c in big + BACKGROUND_CLIENTS:
        a, b = fair[c], fifo[c]
        line(f"    {c:<10} {len(a):>6,} jobs     p50 {sim(pct(a, 50)):>8}  p95 {sim(pct(a, 95)):>8}"
             f"        p50 {sim(pct(b, 50)):>8}  p95 {sim(pct(b, 95)):>8}")
    small_fair = [x for c in BACKGROUND_CLIENTS for x in fair[c]]
    small_fifo = [x for c in BACKGROUND_CLIENTS for x in fifo[c]]
    if small_fair and small_fifo:
        line(f"  the 11 other teams' p95 with fair share is {pct(small_fifo, 95) / max(pct(small_fair, 95), 1e-9):.1f}"
             f" times shorter: their requests no longer wait behind a burst")
    if r.router:
        # max_in_flight holds on each shard by itself
        on_shard = monitor.shard_in_flight
        line(f"  in flight on one shard at most {on_shard[QUEUE]} in {QUEUE} and "
             f"{on_shard[COMPARE_QUEUE]} in {COMPARE_QUEUE} (jq.key_stats by shard, 4 samples a "
             f"second): the limit of {ENDPOINT} held on each shard with {r.args.workers} workers "
             f"long-polling each through the router")
        line(f"  over the {r.shards} shards at most {monitor.max_in_flight} in {QUEUE} and "
             f"{monitor.max_fifo_in_flight} in {COMPARE_QUEUE} (jq.queue_stats): through the "
             f"router max_in_flight is per shard, {ENDPOINT} on each")
        if max(on_shard.values()) > ENDPOINT:
            ok = False
            line("  ** CHECK FAILED: more jobs in flight on a shard than the endpoint's limit")
    else:
        line(f"  in flight at most {monitor.max_in_flight} in {QUEUE} and {monitor.max_fifo_in_flight} in "
             f"{COMPARE_QUEUE} (jq.queue_stats, 4 samples a second): the limit of {ENDPOINT} held "
             f"with {r.args.workers} workers long-polling each")
        if monitor.max_in_flight > ENDPOINT or monitor.max_fifo_in_flight > ENDPOINT:
            ok = False
            line("  ** CHECK FAILED: more jobs in flight than the endpoint's limit")
    keyed = conn.execute(
        "SELECT coalesce(sum(succeeded_total), 0), count(*) FROM jq.key_stats WHERE queue = %s",
        (QUEUE,)).fetchone()
    line(f"  jq.key_stats: {keyed[1]} keys, {keyed[0]:,} jobs succeeded in all")
    t_succeeded = sum(1 for row in twin_rows if row[1] == "succeeded")
    t_dead = sum(1 for row in twin_rows if row[1] == "dead")
    t_lost = len(twins) - t_succeeded - t_dead
    t_twice = sum(1 for n in r.compare.acks.values() if n > 1)
    line(f"  {COMPARE_QUEUE}: {len(twins):,} jobs, {t_succeeded:,} succeeded, {t_dead} dead, "
         f"lost {t_lost}, acked twice {t_twice}")
    if t_lost or t_twice or r.compare.acks_refused:
        ok = False
        line(f"  ** CHECK FAILED in {COMPARE_QUEUE}")
    line()

    line("Backlog (ready jobs, sampled from jq.queue_stats 4 times a second)")
    s = monitor.samples
    ready = [x[1] + x[2] for x in s]
    # the counters against the tables, now that every job is finished
    if r.router:
        # no jq.job here: the jobs' states as jq_result read them on their shards
        truth = (sum(1 for row in rows if row[1] == "ready"),
                 sum(1 for row in rows if row[1] in ("ready", "scheduled", "leased")))
    else:
        truth = conn.execute(
            "SELECT count(*) FILTER (WHERE j.state = 'r'), count(*) "
            "  FROM jq.job j JOIN jq.queue q USING (queue_id) WHERE q.name = %s",
            (QUEUE,)).fetchone()
    stats = conn.execute("SELECT ready, scheduled, in_flight, ready_by_priority "
                         "  FROM jq.queue_stats WHERE queue = %s", (QUEUE,)).fetchone()
    drift = max(0, stats[0] - truth[0])
    peak_i = max(range(len(s)), key=lambda i: ready[i])
    line(f"  peak depth {ready[peak_i]:,} ready ({s[peak_i][2]:,} standard, {s[peak_i][1]} urgent) "
         f"at {clock(s[peak_i][0])}")
    # each burst's own peak (the highest sample between its start and the next
    # one's), and when the backlog went back to 0 before the next peak
    starts = [st * 60 for _, _, st, _ in BURSTS] + [float("inf")]
    peaks = []
    for b in range(len(BURSTS)):
        span = [i for i in range(len(s)) if starts[b] <= s[i][0] < starts[b + 1]]
        peaks.append(max(span, key=lambda k: ready[k]) if span else None)
    for b, (client, _, st, _) in enumerate(BURSTS):
        top = peaks[b]
        if top is None:
            continue
        nxt = next((p for p in peaks[b + 1:] if p is not None), len(s))
        zero = next((i for i in range(top, nxt) if ready[i] <= drift), None)
        if zero is not None:
            cleared = f"cleared (ready 0) at {clock(s[zero][0])}"
        else:
            low = min(range(top, nxt), key=lambda k: ready[k])
            cleared = (f"down to {ready[low]:,} at {clock(s[low][0])} when the next burst "
                       f"took over")
        line(f"  {client} burst (from {clock(st * 60)}): peak {ready[top]:,} ready at "
             f"{clock(s[top][0])}, {cleared}")
    if (stats[0], stats[1] + stats[2]) != (truth[0], truth[1] - truth[0]):
        line(f"  ** pgjq's counters disagree with {'jq_result' if r.router else 'jq.job'} at the end: "
             f"jq.queue_stats says ready {stats[0]} {json.dumps(stats[3])}, scheduled {stats[1]}, "
             f"in flight {stats[2]}; {'jq_result finds' if r.router else 'jq.job holds'} "
             f"{truth[1]} unfinished jobs")
        if drift:
            line(f"     (a backlog counts as cleared above when the counters show {drift} or less)")
    urgent_max = max(x[1] for x in s)
    line(f"  urgent lane: at most {urgent_max} ready at any sample")
    if r.router:
        line("  jq.stats_history and alerts: per shard (each shard's background worker samples "
             "and alerts on its own jobs), not available through the router")
    else:
        hist = conn.execute(
            "SELECT max(ready), count(*) FROM jq.stats_history WHERE queue = %s "
            "AND sampled_at >= to_timestamp(%s)", (QUEUE, r.t0_wall)).fetchone()
        line(f"  jq.stats_history (the background worker's 1 s samples): {hist[1]} samples, "
             f"peak ready {hist[0]:,}")
        alerts = conn.execute(
            "SELECT kind, level, value, threshold, extract(epoch FROM raised_at)::float8, "
            "       extract(epoch FROM cleared_at)::float8 "
            "  FROM jq.alert WHERE queue = %s ORDER BY raised_at", (QUEUE,)).fetchall()
        for kind, level, value, threshold, raised, cleared in alerts:
            line(f"  alert {kind} {level} (threshold {threshold}): raised at "
                 f"{clock(r.sim_of_wall(raised))} (ready {value}), cleared at "
                 f"{clock(r.sim_of_wall(cleared)) if cleared else 'NOT CLEARED'}")
        if not alerts:
            line("  no alert was raised")
    line()

    if r.router:
        # jq.dead_letter_errors is on the shards: each dead job's last
        # error and attempts, from jq_result
        line("Dead letters and why (the last error of each dead job, from jq_result)")
        dead = collections.Counter((row[4], row[2]) for row in rows if row[1] == "dead")
        dead = [(error, attempt, n) for (error, attempt), n in dead.most_common()]
    else:
        line("Dead letters and why (jq.dead_letter_errors)")
        dead = conn.execute(
            "SELECT error, attempt, count(*) FROM jq.dead_letter_errors WHERE queue = %s "
            "GROUP BY 1, 2 ORDER BY 3 DESC", (QUEUE,)).fetchall()
    for error, attempt, n in dead:
        line(f"  {n:>4}  attempt {attempt}: {error}")
    malformed_ids = {job_id for job_id, idx in ids.items() if plan[idx].malformed}
    dead_ids = {row[0] for row in rows if row[1] == "dead"}
    line(f"  dead jobs are exactly the malformed submissions: "
         f"{'yes' if dead_ids == malformed_ids else 'NO'} ({len(dead_ids)} dead, "
         f"{len(malformed_ids)} malformed)")
    if dead_ids != malformed_ids:
        ok = False
    line()

    line("The crash and lease reclaim")
    if r.crash:
        c = r.crash
        n = len(c["jobs"])
        line(f"  {clock(r.sim_of_wall(c['wall']))}  worker {c['worker']} died mid-inference "
             f"holding {n} lease{'s' if n != 1 else ''} of the {CRASH_JOBS} it asked for, the "
             f"endpoint's free slots (connection closed, nothing acked); "
             f"lease {LEASE_SECONDS} s = {LEASE_SECONDS * f / 60:g} launch-day min")
        for job_id, token, attempt in c["jobs"]:
            row = res.get(job_id)
            if row is None:
                line(f"    job {job_id}: NOT FOUND")
                ok = False
                continue
            redone = (f"back to ready at {clock(r.sim_of_wall(row[9]))} (reclaimed), "
                      f"redelivered at {clock(r.sim_of_wall(row[7]))}" if row[7] else "")
            line(f"    job {job_id} ({'urgent' if row[3] == URGENT else 'standard'}): "
                 f"{row[1]}, attempts {row[2]}, last error '{row[4]}', {redone}")
            if plan[ids[job_id]].malformed:      # redone, then failed permanently
                good = row[1] == "dead" and row[2] >= 2
            else:
                good = row[1] == "succeeded" and row[2] >= 2 and row[4] == "lease expired"
            if not good:
                ok = False
                line("    ** CHECK FAILED: expected attempts > 1 after 'lease expired'")
        job_id, token, _ = c["jobs"][0]
        late = conn.execute("SELECT jq.jq_ack(%s, %s, %s)",
                            (job_id, token, Jsonb({"late": True}))).fetchone()[0]
        line(f"    the dead worker's token, if it came back: jq.jq_ack(job {job_id}) = {late} "
             f"(fenced off)")
        if late:
            ok = False
    else:
        line("  ** the crash did not happen")
        ok = False
    reclaimed = [row for row in rows if row[4] == "lease expired"]
    line(f"  jobs with last error 'lease expired': {len(reclaimed)}; "
         f"lease extensions by jq_extend: {r.extensions} (on {len(r.extended_jobs)} "
         f"cold-model jobs), leases lost: {r.leases_lost}")
    line()

    line("Clients awaiting launch-blocking results (CALL jq.jq_wait_result, up to 4 simulated minutes)")
    timeout = AWAIT_TIMEOUT / r.factor
    ended = [a for a in r.await_log if a[1] in ("succeeded", "dead")]
    waited_out = [a for a in r.await_log if a[1] not in ("succeeded", "dead")]
    early = [a for a in waited_out if a[2] < timeout * 0.9]
    lags = sorted(a[3] for a in ended if a[3] is not None)
    line(f"  awaited {len(r.await_log):,}: {len(ended):,} returned with their result, "
         f"{len(waited_out):,} still running after 4 minutes (their state then)")
    if lags:
        line(f"  {len(lags):,} results came while their client waited: it had them "
             f"{pct(lags, 50) * 1000:.1f} ms after the ack (median; max {lags[-1] * 1000:.1f} ms), "
             f"woken by the ack's commit")
    line(f"  returned early without a result: {len(early)}")
    if early or r.await_errors or not r.await_log:
        ok = False
    for e in r.await_errors:
        line(f"  ** error: {e}")
    line()

    line("Accounting (every distinct job id the producers got back, read with jq_result)")
    succeeded = sum(1 for row in rows if row[1] == "succeeded")
    n_dead = sum(1 for row in rows if row[1] == "dead")
    lost = len(ids) - succeeded - n_dead
    twice = sum(1 for n in r.acks.values() if n > 1)
    acks_ok = sum(r.acks.values())
    attempts_off = sum(1 for row in rows if row[2] != r.deliveries.get(row[0], 0))
    wrong = 0
    for row in rows:
        if row[1] == "succeeded":
            score, reasons = score_copy(plan[ids[row[0]]].payload["copy"])
            if row[5].get("score") != score or row[5].get("reasons") != reasons:
                wrong += 1
    line(f"  job ids returned to producers  {len(ids):>7,}")
    line(f"  succeeded                      {succeeded:>7,}")
    line(f"  dead (failed permanently)      {n_dead:>7,}")
    line(f"  acks accepted / refused        {acks_ok:>7,} / {r.acks_refused}")
    line(f"  jobs acked more than once      {twice:>7}")
    line(f"  attempts != deliveries seen    {attempts_off:>7}")
    line(f"  results not matching the rules {wrong:>7}")
    line(f"  jobs lost: {lost}")
    if lost or twice or attempts_off or wrong or acks_ok != succeeded or r.acks_refused:
        ok = False
    for e in r.producer_errors + r.worker_errors:
        line(f"  ** error: {e}")
        ok = False
    return out, ok


def main():
    p = argparse.ArgumentParser(description="pgjq launch-day replay")
    p.add_argument("--factor", type=float, default=120.0,
                   help="time compression: simulated seconds per real second (default 120)")
    p.add_argument("--workers", type=int, default=10,
                   help="workers per queue (default 10, more than the endpoint's 8)")
    p.add_argument("--producers", type=int, default=8,
                   help="producer threads (default 8; each submits to both queues)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--scale", type=float, default=1.0,
                   help="the day's size: SCALE times the requests, each inference 1/SCALE "
                        "times as long, the alert threshold SCALE times as high (default 1)")
    p.add_argument("--router", action="store_true",
                   help="the database is a pgjq_proxy router over pgjq shards (proxy/pgjq_proxy)")
    p.add_argument("--chart", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "..", "bench", "results",
                                                   "launch_day.png"))
    args = p.parse_args()
    if args.scale <= 0:
        p.error("--scale must be above 0")
    chart = os.path.normpath(os.path.abspath(args.chart))

    plan = plan_day(args.seed, args.scale)
    replay = Replay(args)
    replay.planned = len(plan)

    admin = replay.connect("setup")
    admin.execute("SET client_min_messages = warning")
    if not args.router:              # a router has no pgjq: its shards do
        admin.execute("CREATE EXTENSION IF NOT EXISTS pgjq")
    # through the router: on every shard
    admin.execute("SELECT jq.jq_create_queue(%s, lease_seconds => %s, max_attempts => 5, "
                  "alert_depth_warning => %s, max_in_flight => %s, fair => true)",
                  (QUEUE, LEASE_SECONDS, replay.alert_warning, ENDPOINT))
    admin.execute("SELECT jq.jq_create_queue(%s, lease_seconds => %s, max_attempts => 5, "
                  "max_in_flight => %s)", (COMPARE_QUEUE, LEASE_SECONDS, ENDPOINT))
    for _ in range(100):
        if args.router:
            # the router's view: one row per shard, its jq_worker_status()
            shards = admin.execute("SELECT shard, status FROM jq.worker_status "
                                   " ORDER BY shard").fetchall()
            status = "; ".join(f"shard {n}: {st}" for n, st in shards if st != "ok")
            status = status or ("ok" if shards else "the router has no shard")
            replay.shards = len(shards)
        else:
            status = admin.execute("SELECT status FROM jq.jq_worker_status()").fetchone()[0]
        if status == "ok":
            break
        time.sleep(0.1)
    else:
        sys.exit(f"launch_day: the pgjq background worker is not serving this database: {status}")

    per_client = collections.Counter(s.client for s in plan if not s.resubmit)
    if args.router:
        print(f"  through a pgjq_proxy router over {replay.shards} shards (jq.worker_status: each "
              f"shard's background worker ok); the queues' limits hold on each shard, alerts "
              f"and jq.stats_history are the shards' own and not shown")
    print(f"  queue '{QUEUE}': lease {LEASE_SECONDS} s, alert_depth_warning {replay.alert_warning}"
          f"{' per shard' if args.router else ''}, max_in_flight {ENDPOINT}"
          f"{' per shard' if args.router else ''}, fair share among the 14 teams (job keys); "
          f"{args.workers} workers, {args.producers} producers; time x{args.factor:g} "
          f"(09:00-13:00 in {WINDOW / args.factor:.0f} s)")
    print("  bursts: " + ", ".join(f"{c} {per_client[c]:,} from {clock(st * 60)}"
                                   for c, _, st, _ in BURSTS)
          + f"; 11 other clients {sum(per_client[c] for c in BACKGROUND_CLIENTS):,} "
            f"spread over the day")
    print(f"  worker {CRASH_WORKER} will die at {clock(CRASH_AT)} holding {CRASH_JOBS} leases")
    print(f"  every request also goes to '{COMPARE_QUEUE}' (same limit, no fair share, its own "
          f"{args.workers} workers), for the comparison")
    print()

    monitor = Monitor(replay)
    replay.start()
    workers = [Worker(replay, n) for n in range(1, args.workers + 1)]
    workers += [Worker(replay, n, COMPARE_QUEUE) for n in range(1, args.workers + 1)]
    for w in workers:
        w.start()
    awaiters = [threading.Thread(target=awaiter, args=(replay, f"c{k + 1}"), daemon=True)
                for k in range(AWAITERS)]
    for t in awaiters:
        t.start()
    producers = []
    for k in range(args.producers):
        items = [(i, s) for i, s in enumerate(plan) if i % args.producers == k]
        t = threading.Thread(target=producer, args=(replay, f"p{k + 1}", items), daemon=True)
        t.start()
        producers.append(t)

    deadline = replay.t0_mono + (WINDOW + 2 * 3600) / args.factor   # 15:00 at the latest
    try:
        while True:
            monitor.sample()
            producing = any(t.is_alive() for t in producers)
            if not producing and replay.sim_now() >= WINDOW and monitor.all_done():
                break
            if time.monotonic() > deadline:
                monitor.finish()
                print("  the queue did not drain by 15:00; stopping", flush=True)
                break
            time.sleep(0.25)
        for _ in awaiters:
            replay.awaits.put(None)
        for t in awaiters:
            t.join(timeout=10)
        replay.stop_workers.set()
        for w in workers:
            w.join(timeout=5)
        # the alert clears at the background worker's next check (1 s);
        # through the router alerts are on the shards
        for _ in range(0 if args.router else 12):
            _, alerts = monitor.sample()
            if alerts == 0:
                break
            time.sleep(0.25)
    finally:
        monitor.finish()
    elapsed = time.monotonic() - replay.t0_mono

    lines, ok = report(replay, plan, monitor, admin, elapsed)
    err = write_chart(chart, monitor.samples, plan, replay)
    lines.append("")
    lines.append("Depth over the day (ready jobs, max per column; 09:00 to "
                 f"{clock(monitor.samples[-1][0])})")
    width = 72
    std = [x[2] for x in monitor.samples]
    urg = [x[1] for x in monitor.samples]
    lines.append(f"  standard |{sparkline(std, width)}| max {max(std):,}")
    lines.append(f"  urgent   |{sparkline(urg, width)}| max {max(urg):,}")
    span = monitor.samples[-1][0]
    ticks = [" "] * width
    for h in range(10, 24):
        pos = int((h * 3600 - DAY_START) / span * width) if span else width
        if 0 <= pos <= width - 5:
            ticks[pos:pos + 5] = list(f"{h:02d}:00")
    lines.append("           " + "".join(ticks[:width]))
    lines.append(f"  chart: {chart}" if err is None else f"  chart not written: {err}")
    print()
    print("\n".join(lines))
    print()
    if ok:
        print(f"launch-day replay OK ({elapsed:.0f} s)")
    else:
        print("launch-day replay FAILED: see the checks above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
