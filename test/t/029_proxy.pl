# Scale-out: a PL/Proxy router (proxy/pgjq_proxy, proxy/pgjq_proxy.sql) over
# three pgjq shards, each its own cluster, and the router a cluster of its
# own without pgjq.  Producers and workers call the router with pgjq's own
# function names and signatures.  Checked:
#   - the launch-day mix of jobs (keys of 14 client teams, jobs without a
#     key, idempotency keys resubmitted, scheduled jobs, priorities, a
#     batch over many keys, an enqueue_batch) through the router, drained
#     by three workers through the router: every job done exactly once,
#     none lost, none left;
#   - each job's id names its shard (id >> 44), each key's jobs are on one
#     shard, each idempotency key is one job, the batch's progress sums
#     its jobs over the shards, and the router's views equal the sum of
#     what the shards say;
#   - a job's later calls go to its shard: jq_result, jq_await, the
#     waiting procedures, jq_cancel, jq_fail, redrive;
#   - a shard down: its keys' enqueues and its jobs' calls fail with 08006
#     naming it, while keys of the other shards, jobs without a key,
#     dequeue and the views go on (the views leave it out with a WARNING);
#     back up, the router reaches it again;
#   - pgjq_proxy refuses a shard holding another shard's ids, and a
#     different number of shards.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $proxy_dir = "$FindBin::RealBin/../../proxy";
my $n = 3;

my @shards = map {
	new_node("shard$_", extension => 1, conf => {
		'pgjq.database' => 'postgres',
		'pgjq.naptime' => '100ms' })
} 0 .. $n - 1;
my $router = PostgreSQL::Test::Cluster->new('router');
$router->init;
$router->start;

sub shard_conninfo
{
	my ($node) = @_;
	return 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres';
}

sub run_setup
{
	my (@conninfo) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ "$proxy_dir/pgjq_proxy", $router->connstr('postgres'), @conninfo ],
		'>', \$out, '2>', \$err);
	return ($ok, $out, $err);
}

my ($ok, $out, $err) = run_setup(map { shard_conninfo($_) } @shards);
ok($ok, 'pgjq_proxy sets up the router over three shards') or diag($err);
like($out, qr/router over 3 shards ready/, 'pgjq_proxy says the router reaches every shard');

sub r { return $router->safe_psql('postgres', $_[0]); }

# --- the launch-day mix through the router ---------------------------------

r(q{SELECT 1 FROM jq.jq_create_queue('launch', lease_seconds => 5, backoff_base => '50 ms',
                                      key_max_in_flight => 2)});
is($_->safe_psql('postgres', "SELECT count(*) FROM jq.queue WHERE name = 'launch'"), '1',
	'the queue is created on shard ' . $_->name) for @shards;

my @teams = map { "team$_" } 1 .. 14;
my $teams = join(',', map { "'$_'" } @teams);
r(qq{
	DO \$\$
	DECLARE
	    teams text[] := ARRAY[$teams];
	BEGIN
	    -- 14 teams x 20 scoring jobs, with the team as key, some urgent
	    FOR i IN 1 .. 280 LOOP
	        PERFORM jq.jq_enqueue('launch', jsonb_build_object('kind', 'keyed', 'n', i),
	                              priority => CASE WHEN i % 10 = 0 THEN 5 ELSE 0 END,
	                              key => teams[1 + i % 14]);
	    END LOOP;
	    -- 60 without a key, 10 of them scheduled a second ahead
	    FOR i IN 1 .. 60 LOOP
	        PERFORM jq.jq_enqueue('launch', jsonb_build_object('kind', 'plain', 'n', i),
	                              run_at => CASE WHEN i <= 10 THEN now() + interval '1 s' END);
	    END LOOP;
	    -- 40 with idempotency keys, each submitted twice (a retrying client)
	    FOR round IN 1 .. 2 LOOP
	        FOR i IN 1 .. 40 LOOP
	            PERFORM jq.jq_enqueue('launch', jsonb_build_object('kind', 'idem', 'n', i),
	                                  idempotency_key => 'req-' || i);
	        END LOOP;
	    END LOOP;
	END
	\$\$});
my $batch = r(qq{
	SELECT jq.jq_submit_batch('launch',
	           ARRAY(SELECT jsonb_build_object('kind', 'batch', 'n', i) FROM generate_series(1, 50) i),
	           'audience run',
	           keys => ARRAY(SELECT (ARRAY[$teams])[1 + i % 14] FROM generate_series(1, 50) i))});
my $ids = r(q{
	SELECT array_to_string(jq.jq_enqueue_batch('launch',
	           ARRAY(SELECT jsonb_build_object('kind', 'many', 'n', i) FROM generate_series(1, 30) i),
	           idempotency_keys => ARRAY(SELECT CASE WHEN i % 3 = 0 THEN 'many-' || i END
	                                       FROM generate_series(1, 30) i),
	           keys => ARRAY(SELECT CASE WHEN i % 2 = 0 THEN 'team' || (1 + i % 14) END
	                           FROM generate_series(1, 30) i)), ',')});
my @many = split /,/, $ids;
is(scalar(@many), 30, 'jq_enqueue_batch through the router returns an id per payload');
my $resubmit = r(q{
	SELECT array_to_string(jq.jq_enqueue_batch('launch',
	           ARRAY(SELECT jsonb_build_object('kind', 'many', 'n', i) FROM generate_series(1, 30) i),
	           idempotency_keys => ARRAY(SELECT CASE WHEN i % 3 = 0 THEN 'many-' || i END
	                                       FROM generate_series(1, 30) i),
	           keys => ARRAY(SELECT CASE WHEN i % 2 = 0 THEN 'team' || (1 + i % 14) END
	                           FROM generate_series(1, 30) i)), ',')});
my @again = split /,/, $resubmit;
is_deeply([ map { $again[$_] } grep { ($_ + 1) % 3 == 0 } 0 .. 29 ],
	[ map { $many[$_] } grep { ($_ + 1) % 3 == 0 } 0 .. 29 ],
	'resubmitted idempotency keys in a batch give the first ids back, in order');
my $expected = 280 + 60 + 40 + 50 + 30 + 20;    # the resubmitted batch's 20 without a key are new

# every shard got work, and every id names its shard
my $total = 0;
for my $i (0 .. $n - 1)
{
	my ($count, $wrong) = split /\|/, $shards[$i]->safe_psql('postgres',
		"SELECT count(*), count(*) FILTER (WHERE id >> 44 <> $i) FROM jq.job");
	cmp_ok($count, '>', 50, "shard $i holds a share of the jobs ($count)");
	is($wrong, '0', "every job on shard $i has an id in its range");
	$total += $count;
}
is($total, $expected, "the shards hold $expected jobs: every enqueue once, resubmissions not again");
is(r(q{SELECT sum(ready + scheduled) FROM jq.queue_stats WHERE queue = 'launch'}), $expected,
	'the router\'s queue_stats sums the shards');

# --- three workers drain it through the router -----------------------------

my $worker_sql = q{
	DO $$
	DECLARE
	    j record;
	    idle integer := 0;
	    got integer;
	BEGIN
	    WHILE idle < 4 LOOP
	        got := 0;
	        FOR j IN SELECT * FROM jq.jq_dequeue('launch', 4, NULL, wait => '500 ms') LOOP
	            got := got + 1;
	            IF (j.payload ->> 'n')::integer % 37 = 0 AND j.attempt = 1 THEN
	                PERFORM jq.jq_fail(j.job_id, j.lease_token, 'model timeout');
	            ELSE
	                PERFORM jq.jq_ack(j.job_id, j.lease_token,
	                                  jsonb_build_object('job', j.job_id, 'worker', pg_backend_pid()),
	                                  usage => jsonb_build_object('tokens', 100));
	            END IF;
	        END LOOP;
	        idle := CASE WHEN got = 0 THEN idle + 1 ELSE 0 END;
	    END LOOP;
	END
	$$};
my @workers = map {
	my %w = (out => '', err => '');
	$w{h} = IPC::Run::start([ 'psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1',
			'-d', $router->connstr('postgres'), '-c', $worker_sql ],
		'>', \$w{out}, '2>', \$w{err}, IPC::Run::timeout(180));
	\%w
} 1 .. 3;
for my $w (@workers)
{
	ok($w->{h}->finish, 'a worker through the router ends cleanly') or diag($w->{err});
}

my ($done, $dup) = (0, 0);
my %key_shard;
my $key_on_two = 0;
for my $i (0 .. $n - 1)
{
	my $s = $shards[$i];
	is($s->safe_psql('postgres', 'SELECT count(*) FROM jq.job'), '0', "shard $i has no job left");
	is($s->safe_psql('postgres', 'SELECT count(*) FROM jq.dead_letter'), '0', "shard $i has no dead letter");
	my ($d, $bad) = split /\|/, $s->safe_psql('postgres', q{
		SELECT count(*), count(*) FILTER (WHERE state <> 'd' OR (result ->> 'job')::bigint <> job_id)
		  FROM jq.job_result});
	is($bad, '0', "every result on shard $i is its own job's, succeeded");
	$done += $d;
	for my $key (split /\n/, $s->safe_psql('postgres',
			'SELECT DISTINCT key FROM jq.job_result WHERE key IS NOT NULL'))
	{
		$key_on_two++ if exists $key_shard{$key};
		$key_shard{$key} = $i;
	}
}
is($done, $expected, "all $expected jobs succeeded once, none lost");
is($key_on_two, 0, 'each key\'s jobs are all on one shard');
is(scalar(keys %key_shard), 14, 'the 14 teams\' keys spread over the shards');
cmp_ok(scalar(keys %{ { reverse %key_shard } }), '>=', 2, 'keys are on more than one shard');

my ($ready, $inflight, $succeeded, $shards_answered) = split /\|/, r(q{
	SELECT ready, in_flight, succeeded_total, shards FROM jq.queue_stats WHERE queue = 'launch'});
is("$ready|$inflight|$shards_answered", '0|0|3', 'the router\'s queue_stats: nothing left, three shards');
is($succeeded, $expected, 'the router\'s queue_stats: succeeded_total sums the shards');
is(r(q{SELECT sum(jobs) FROM jq.usage WHERE queue = 'launch'}), $expected,
	'the router\'s usage sums the shards');
is(r(qq{SELECT total || ' ' || succeeded || ' ' || percent_complete
          FROM jq.batch_progress WHERE batch_id = $batch}), '50 50 100.0',
	'the batch\'s progress sums its jobs over the shards');
my $batch_shards = 0;
for my $s (@shards)
{
	$batch_shards++ if $s->safe_psql('postgres',
		"SELECT count(*) FROM jq.batch_job WHERE batch_id = $batch") > 0;
}
cmp_ok($batch_shards, '>=', 2, 'the batch\'s jobs are on several shards under one batch id');
is(r(q{SELECT sum(delivered_total) FROM jq.key_stats WHERE queue = 'launch' AND key IS NOT NULL})
	 >= 280 + 50 ? 'yes' : 'no', 'yes', 'the router\'s key_stats shows each key\'s deliveries');

# --- a job's calls go to its shard ------------------------------------------

my %by_shard;
for my $i (0 .. $n - 1)
{
	$by_shard{$i} = $shards[$i]->safe_psql('postgres',
		'SELECT job_id FROM jq.job_result ORDER BY job_id LIMIT 1');
	is(r("SELECT state || ' ' || (result ->> 'job') FROM jq.jq_result($by_shard{$i})"),
		"succeeded $by_shard{$i}", "jq_result through the router finds a job of shard $i");
}
is(r('SELECT count(*) FROM jq.jq_result(123456789)'), '0', 'an unknown id: no row');
is(r('SELECT count(*) FROM jq.jq_result(-5)'), '0', 'a negative id: no row');
is(r('SELECT jq.jq_ack(' . ((7 << 44) + 1) . ', 1)'), 'f', 'an id of a shard the router lacks: a stale ack');

my $await_id = r(q{SELECT jq.jq_enqueue('launch', '{"kind": "await"}', key => 'team3')});
my %aw = (out => '', err => '');
$aw{h} = IPC::Run::start([ 'psql', '-X', '-qAt', '-d', $router->connstr('postgres'),
		'-c', "CALL jq.jq_wait_result($await_id, '20 s', NULL)" ],
	'>', \$aw{out}, '2>', \$aw{err});
usleep(300_000);
my $leased = r(q{CALL jq.jq_wait_dequeue('launch', 1, NULL, '5 s', NULL)});
like($leased, qr/"job_id": $await_id/, 'jq_wait_dequeue through the router leases the job');
my ($token) = $leased =~ /"lease_token": (\d+)/;
my $t0 = time;
r("SELECT jq.jq_ack($await_id, $token, '{\"score\": 0.9}')");
$aw{h}->finish;
like($aw{out}, qr/"state": "succeeded".*"score": 0.9|"score": 0.9.*"state": "succeeded"/,
	'jq_wait_result through the router returns the result');
cmp_ok(time - $t0, '<', 5, 'and returns at the ack, not at its timeout');

my $cancel_id = r(q{SELECT jq.jq_enqueue('launch', '{}', run_at => now() + interval '1 hour', key => 'team5')});
is(r("SELECT jq.jq_cancel($cancel_id)"), 't', 'jq_cancel through the router');
is(r("SELECT state FROM jq.jq_await($cancel_id, '1 s')"), 'cancelled', 'jq_await through the router');

my $dead_id = r(q{SELECT jq.jq_enqueue('launch', '{}', key => 'team6')});
my ($dj, $dt) = split /\|/, r(q{SELECT job_id, lease_token FROM jq.jq_dequeue('launch')});
is($dj, $dead_id, 'the job to fail is leased');
is(r("SELECT jq.jq_fail($dj, $dt, 'bad input', permanent => true)"), 'dead', 'jq_fail through the router');
is(r("SELECT jq.jq_redrive('launch', ARRAY[$dead_id])"), '1', 'jq_redrive through the router, by id');
is(r("SELECT state FROM jq.jq_result($dead_id)"), 'ready', 'the redriven job is ready again');
r("SELECT jq.jq_cancel($dead_id)");

# errors of a shard come back with its SQLSTATE
my ($rc, $stdout, $stderr) = $router->psql('postgres', q{SELECT * FROM jq.jq_dequeue('nope')});
like($stderr, qr/queue "nope" does not exist/, 'a shard\'s error comes back through the router');

# --- bad input: the router answers as a shard does --------------------------

# each call, through the router and on shard 0 directly: the same SQLSTATE
# (or both succeed)
sub sqlstate
{
	my ($node, $sql) = @_;
	my ($rc, $o, $e) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $rc == 0 ? 'ok' : ($e =~ /ERROR:  ([0-9A-Z]{5}):/ ? $1 : "?$e");
}
for my $sql (
	q{SELECT jq.jq_enqueue(NULL, '{}')},
	q{SELECT jq.jq_enqueue('launch', NULL)},
	q{SELECT jq.jq_enqueue('launch', '5')},
	q{SELECT jq.jq_enqueue('Bad Name', '{}')},
	q{SELECT jq.jq_enqueue('nope', '{}', key => 'k')},
	q{SELECT jq.jq_enqueue('launch', '{}', priority => 1000)},
	q{SELECT jq.jq_enqueue('launch', '{}', run_at => 'infinity')},
	q{SELECT jq.jq_enqueue('launch', '{}', key => repeat('k', 1000))},
	q{SELECT jq.jq_enqueue('launch', '{}', deadline => now() - interval '1 h')},
	q{SELECT jq.jq_enqueue('launch', '{}', cost => -1)},
	q{SELECT jq.jq_enqueue_batch('launch', NULL)},
	q{SELECT jq.jq_enqueue_batch('launch', '{}'::jsonb[])},
	q{SELECT jq.jq_enqueue_batch('launch', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['a'])},
	q{SELECT jq.jq_enqueue_batch('launch', ARRAY['{}', NULL]::jsonb[], keys => ARRAY['a', 'b'])},
	q{SELECT jq.jq_enqueue_batch('launch', ARRAY['{}', '{}']::jsonb[], idempotency_keys => ARRAY['x', 'x'])},
	q{SELECT jq.jq_create_batch('nope')},
	q{SELECT * FROM jq.jq_dequeue(NULL)},
	q{SELECT * FROM jq.jq_dequeue('launch', 0)},
	q{SELECT * FROM jq.jq_dequeue('launch', 1, -5)},
	q{SELECT * FROM jq.jq_dequeue('launch', 1, NULL, '-1 s')},
	q{SELECT * FROM jq.jq_dequeue('launch', 1, NULL, '301 s')},
	q{SELECT jq.jq_ack(NULL, 1)},
	q{SELECT jq.jq_ack(1, 1, '{}', '5')},
	q{SELECT * FROM jq.jq_ack_batch(ARRAY[1, 2], ARRAY[1])},
	q{SELECT * FROM jq.jq_ack_batch(NULL, NULL)},
	q{SELECT * FROM jq.jq_ack_dequeue('launch', 1, NULL, ARRAY[1], NULL)},
	q{SELECT jq.jq_fail(1, 1, NULL)},
	q{SELECT jq.jq_fail(1, 1, 'x', retry_in => '-1 s')},
	q{SELECT jq.jq_extend(1, 1, -1)},
	q{SELECT jq.jq_progress(1, 1, NULL)},
	q{SELECT jq.jq_cancel(NULL)},
	q{SELECT * FROM jq.jq_result(NULL)},
	q{SELECT * FROM jq.jq_await(1, '301 s')},
	q{CALL jq.jq_wait_result(1, '-1 s', NULL)},
	q{CALL jq.jq_wait_dequeue('launch', 1, NULL, '400 s', NULL)},
	q{SELECT jq.jq_create_queue('launch')},
	q{SELECT jq.jq_create_queue('x', lease_seconds => 0)},
	q{SELECT jq.jq_alter_queue('nope', lease_seconds => 5)},
	q{SELECT jq.jq_drop_queue('nope')},
	q{SELECT jq.jq_set_key_policy('launch', 'team1', weight => 0)},
	q{SELECT jq.jq_redrive('nope')})
{
	is(sqlstate($router, $sql), sqlstate($shards[0], $sql), "through the router as on a shard: $sql");
}

# --- a shard down -------------------------------------------------------------

my $down = 2;
my ($key_down, $key_up);
for my $k (map { "client-$_" } 1 .. 100)
{
	my $s = r("SELECT pgjq_proxy.key_shard('launch', '$k', NULL)");
	$key_down //= $k if $s == $down;
	$key_up //= $k if $s != $down;
}
my $job_down = $shards[$down]->safe_psql('postgres', 'SELECT max(job_id) FROM jq.job_result');
$shards[$down]->stop('fast');

($rc, $stdout, $stderr) = $router->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT jq.jq_enqueue('launch', '{}', key => '$key_down')");
like($stderr, qr/08006: shard $down of the pgjq router cannot be reached/,
	'a key of the shard that is down: 08006 naming the shard');
like($stderr, qr/HINT:.*other shards go on working/, 'with a hint');
($rc, $stdout, $stderr) = $router->psql('postgres', "SELECT * FROM jq.jq_result($job_down)");
like($stderr, qr/shard $down of the pgjq router cannot be reached/, 'a job of that shard: the same error');
like(r("SELECT jq.jq_enqueue('launch', '{}', key => '$key_up')"), qr/^\d+$/,
	'a key of another shard: enqueued');
my $plain = r(q{SELECT count(jq.jq_enqueue('launch', '{}')) FROM generate_series(1, 30)});
is($plain, '30', 'jobs without a key: all 30 enqueued on the shards that answer');
my $ready_up = 0;
$ready_up += $shards[$_]->safe_psql('postgres', q{SELECT count(*) FROM jq.job WHERE state = 'r'})
  for grep { $_ != $down } 0 .. $n - 1;
cmp_ok($ready_up, '>=', 31, 'the shards that answer hold the jobs just enqueued');
my $acked = 0;
while (my $row = r(q{SELECT job_id || ',' || lease_token FROM jq.jq_dequeue('launch')}))
{
	my ($jid, $tok) = split /,/, $row;
	$acked++ if r("SELECT jq.jq_ack($jid, $tok)") eq 't';
	last if $acked > $ready_up;
}
is($acked, $ready_up, 'dequeue through the router serves the shards that answer: all their jobs acked');
($rc, $stdout, $stderr) = $router->psql('postgres',
	q{SELECT ready, shards FROM jq.queue_stats WHERE queue = 'launch'});
is($stdout, '0|2', 'queue_stats: the two shards that answer');
like($stderr, qr/WARNING:  shard $down of the pgjq router cannot be reached: its rows are left out/,
	'with a WARNING naming the shard left out');
like(r("SELECT status FROM jq.worker_status WHERE shard = $down"), qr/^unreachable: /,
	'worker_status shows the shard as unreachable');

$shards[$down]->start;
my $back;
for (1 .. 50)
{
	($rc, $stdout, $stderr) = $router->psql('postgres',
		"SELECT jq.jq_enqueue('launch', '{}', key => '$key_down') >> 44");
	last if ($back = ($rc == 0 && $stdout eq $down));
	usleep(200_000);
}
ok($back, 'the shard back up: its keys are enqueued there again');

# --- pgjq_proxy run again over the same shards ---------------------------------

# shard 2 also holds a batch made on shard 0, as the router's jq_create_batch
# leaves one (made on one shard, adopted on the others): a second setup must
# not take the adopted batch for one made before sharding
$shards[2]->safe_psql('postgres', q{SELECT jq.jq_adopt_batch(5, 'launch')});
my $ids_before = join(' ', map {
	$_->safe_psql('postgres', q{SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM jq.job_id_seq})
} @shards);
($ok, $out, $err) = run_setup(map { shard_conninfo($_) } @shards);
ok($ok, 'pgjq_proxy run again over the same three shards') or diag($err);
is(join(' ', map {
	$_->safe_psql('postgres', q{SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM jq.job_id_seq})
} @shards), $ids_before, 'and every shard\'s ids go on from where they were');
is(r(q{SELECT count(DISTINCT jq.jq_enqueue('launch', '{}', key => 'again' || i) >> 44)
         FROM generate_series(1, 40) i}), '3',
	'the router enqueues on the three shards again');

# --- what pgjq_proxy refuses ---------------------------------------------------

my $stray = new_node('stray', extension => 1);
$stray->safe_psql('postgres', q{SELECT jq.jq_create_queue('x'); SELECT jq.jq_enqueue('x', '{}')});
($ok, $out, $err) = run_setup(shard_conninfo($shards[0]), shard_conninfo($stray));
ok(!$ok, 'pgjq_proxy refuses a shard 1 that holds jobs from before sharding');
like($err, qr/outside the id range of shard 1/, 'saying why');
($ok, $out, $err) = run_setup(map { shard_conninfo($_) } @shards[0 .. 1]);
ok(!$ok, 'pgjq_proxy refuses another number of shards');
like($err, qr/keys would move to other shards/, 'saying why');
is(r('SELECT pgjq_proxy.shard_count()'), '3', 'and leaves the router as it was');

$_->stop for @shards, $router, $stray;
done_testing();
