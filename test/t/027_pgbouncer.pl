# Workers and producers behind a real PgBouncer (Debian's package) in
# transaction pooling mode, with fewer server connections than workers:
#   - 6 workers long-poll with CALL jq.jq_wait_dequeue (1 s waits) through a
#     pool of their own (4 server connections: a waiting call holds its
#     server connection, so waits must not starve the acks and enqueues) and
#     ack through the main pool (3), 2 producers enqueue 1,500 jobs with
#     idempotency keys through the main pool and submit each key a second
#     time (a client retrying after a timeout), psycopg with
#     prepare_threshold=None as the example workers connect: every key gets
#     one id, every job succeeds exactly once (0 lost, 0 double-completed),
#     no client sees an error;
#   - while the queue is empty the waiting workers hold no snapshot on the
#     server (backend_xmin NULL);
#   - jq_await through PgBouncer returns at the ack;
#   - psycopg's automatic prepared statements, which PgBouncer before 1.21
#     does not track, break through the same pool (errors such as 26000,
#     42P05 or 08P01): why the example workers turn them off.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $pgbouncer = '/usr/sbin/pgbouncer';
ok(-x $pgbouncer, "Debian's pgbouncer is at $pgbouncer") or die "no pgbouncer\n";
my $python = '/usr/bin/python3';
is(system($python, '-c', 'import psycopg'), 0, 'python3-psycopg is installed')
  or die "no psycopg for $python\n";

my $node = new_node('bouncer', extension => 1, conf => {
	'pgjq.database' => 'postgres',
	'pgjq.naptime' => '200ms' });
create_queue($node, 'postgres', 'pb');
my $version = `$pgbouncer --version`;
my ($major, $minor) = $version =~ /PgBouncer (\d+)\.(\d+)/;
note "pgbouncer $major.$minor";

# --- PgBouncer, transaction pooling, 3 server connections ---------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $user = $node->safe_psql('postgres', 'SELECT current_user');
my ($host, $pgport) = ($node->host, $node->port);
my $conf = "$dir/pgbouncer.ini";
open(my $fh, '>', $conf) or die "$conf: $!";
print $fh <<"EOF";
[databases]
postgres = host=$host port=$pgport dbname=postgres user=$user
waits = host=$host port=$pgport dbname=postgres user=$user pool_size=4
single = host=$host port=$pgport dbname=postgres user=$user pool_size=1

[pgbouncer]
listen_addr =
listen_port = $port
unix_socket_dir = $dir
auth_type = any
pool_mode = transaction
default_pool_size = 3
max_client_conn = 100
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
close $fh;
my ($bout, $berr) = ('', '');
my $bouncer = IPC::Run::start([ $pgbouncer, $conf ], '>', \$bout, '2>', \$berr);
my $dsn = "host=$dir port=$port dbname=postgres";
my $up = 0;
for (1 .. 100)
{
	last if ($up = system('psql', '-X', '-qAt', '-d', $dsn, '-c', 'SELECT 1') == 0);
	select(undef, undef, undef, 0.1);
}
ok($up, 'PgBouncer accepts connections') or die "PgBouncer did not start: $berr\n";

# run_python(CODE, ARGS...): runs CODE with Debian's python3; returns stdout
sub run_python
{
	my ($code, @args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $python, '-c', $code, @args ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	note $err if $err ne '';
	chomp $out;
	return $out;
}

# --- workers and producers through the pool ----------------------------------------------
my $load = <<'PY';
import json, sys, threading, time
import psycopg
from psycopg.types.json import Jsonb

dsn, wait_dsn, nworkers, njobs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
ids = {}               # key -> id of its first submission
mismatch = 0           # a second submission that got another id
acked, refused, errors, xmins = 0, 0, [], []
done = threading.Event()

def connect(to=dsn):
    return psycopg.connect(to, autocommit=True, prepare_threshold=None)

def producer(n):
    global mismatch
    try:
        conn = connect()
        for i in range(n, njobs, 2):
            key = f"req-{i}"
            for attempt in (1, 2):      # the second is a client's retry
                (jid,) = conn.execute(
                    "SELECT jq.jq_enqueue('pb', %s, idempotency_key => %s)",
                    (Jsonb({"i": i}), key)).fetchone()
                with lock:
                    if attempt == 1:
                        ids[key] = jid
                    elif ids[key] != jid:
                        mismatch += 1
    except Exception as e:
        errors.append(f"producer: {e!r}")

def worker(n):
    global acked, refused
    try:
        conn = connect()
        waits = connect(wait_dsn)
        while not done.is_set():
            (jobs,) = waits.execute(
                "CALL jq.jq_wait_dequeue('pb', 5, NULL, '1 s', NULL)").fetchone()
            for j in jobs:
                (ok,) = conn.execute("SELECT jq.jq_ack(%s, %s, %s)",
                                     (j["job_id"], j["lease_token"],
                                      Jsonb({"worker": n}))).fetchone()
                with lock:
                    if ok:
                        acked += 1
                    else:
                        refused += 1
                    if acked >= njobs:
                        done.set()
    except Exception as e:
        errors.append(f"worker {n}: {e!r}")
        done.set()

threads = [threading.Thread(target=worker, args=(n,)) for n in range(nworkers)]
threads += [threading.Thread(target=producer, args=(n,)) for n in range(2)]
t0 = time.time()
for t in threads:
    t.start()
done.wait(120)
done.set()
for t in threads:
    t.join(10)
print(json.dumps({"ids": len(ids), "distinct": len(set(ids.values())), "mismatch": mismatch,
                  "acked": acked, "refused": refused, "errors": errors[:5],
                  "secs": round(time.time() - t0, 1)}))
PY
my $res = run_python($load, $dsn, "host=$dir port=$port dbname=waits", 6, 1500);
note "load through PgBouncer: $res";
like($res, qr/"ids": 1500, "distinct": 1500, "mismatch": 0/,
	'every key got one id, its retry the same one');
like($res, qr/"acked": 1500, "refused": 0, "errors": \[\]/,
	'every job acked once, no ack refused, no client error');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE state = 'd') || '|' || count(*)
	  FROM jq.job_result r JOIN jq.queue q USING (queue_id) WHERE q.name = 'pb'}),
	'1500|1500', 'the tables agree: 1,500 results, all succeeded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.job}), '0',
	'nothing left in jq.job: 0 lost');

# --- waiting through the pool holds nothing on the server ------------------------------------
my @idle = map {
	my ($o, $e) = ('', '');
	[ IPC::Run::start([ 'psql', '-X', '-qAt', '-d', $dsn, '-c',
			"CALL jq.jq_wait_dequeue('pb', 1, NULL, '20 s', NULL)" ], '>', \$o, '2>', \$e),
	  \$o, \$e ]
} 1 .. 3;
defined poll_fast($node, 'postgres', q{
	SELECT count(*) = 3 FROM pg_stat_activity
	 WHERE query LIKE 'CALL jq.jq_wait_dequeue%' AND state = 'active'
	   AND wait_event_type = 'Extension'}, 30)
  or die 'the waits never started';
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE query LIKE 'CALL jq.jq_wait_dequeue%' AND state = 'active'
	   AND backend_xmin IS NULL}), '3',
	'three workers wait through PgBouncer holding no snapshot');
# three jobs: each waiting worker takes one and its wait ends
$node->safe_psql('postgres', q{SELECT jq.jq_enqueue_batch('pb', array_fill('{}'::jsonb, ARRAY[3]))});
my $t = time;
for my $w (@idle)
{
	$w->[0]->finish;
	like(${ $w->[1] }, qr/"job_id"/, 'a waiting worker got its job');
}
ok(time - $t < 10, 'at once');

# --- awaiting a result through the pool ---------------------------------------------------------
my $jid = $node->safe_psql('postgres', q{SELECT jq.jq_enqueue('pb', '{"await": true}')});
my ($aout, $aerr) = ('', '');
my $aw = IPC::Run::start([ 'psql', '-X', '-qAt', '-d', $dsn, '-c',
		"SELECT state FROM jq.jq_await($jid, '20 s')" ], '>', \$aout, '2>', \$aerr);
defined poll_fast($node, 'postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%jq_await%'
	   AND wait_event_type = 'Extension'}, 30) or die 'the await never started';
my (undef, $tok) = split /\|/, $node->safe_psql('postgres',
	q{SELECT job_id, lease_token FROM jq.jq_dequeue('pb')});
$node->safe_psql('postgres', "SELECT jq.jq_ack($jid, $tok)");
$aw->finish;
is($aout, "succeeded\n", 'jq_await through PgBouncer returns at the ack');

# --- psycopg's automatic prepared statements through the same kind of pool ------------------------
my $prepared = <<'PY';
import sys, threading
import psycopg
dsn, threshold = sys.argv[1], sys.argv[2]
errors = []
def client(n):
    conn = psycopg.connect(dsn, autocommit=True,
                           prepare_threshold=None if threshold == "none" else int(threshold))
    for i in range(200):
        try:
            conn.execute("SELECT count(*) FROM jq.jq_result(%s)", (i,)).fetchone()
            conn.execute("SELECT %s::int + %s::int", (i, n)).fetchone()
        except psycopg.Error as e:
            errors.append(e.sqlstate)
threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(len(errors), " ".join(sorted(set(str(e) for e in errors))))
PY
my $single = "host=$dir port=$port dbname=single";
my $safe = run_python($prepared, $single, 'none');
is($safe, '0 ', 'prepare_threshold=None: 1,600 statements, no error');
my $unsafe = run_python($prepared, $single, '0');
note "prepare_threshold=0 through PgBouncer $major.$minor: $unsafe (errors, SQLSTATEs)";
if ($major < 1 || ($major == 1 && $minor < 21))
{
	cmp_ok((split / /, $unsafe)[0], '>', 0,
		'psycopg prepared statements break through PgBouncer before 1.21: the example workers turn them off');
}

$bouncer->signal('TERM');
$bouncer->finish;
$node->stop;
done_testing();
