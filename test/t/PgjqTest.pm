# The shared pieces of the TAP tests (test/t/*.pl): the node preamble,
# fixtures (queues, jobs, leases, settings), polls, and the checks on
# pgjq's tables (snapshots, counters against the truth).  A test loads it
# with
#   use FindBin;
#   use lib $FindBin::RealBin;
#   use PgjqTest;
# A helper lives here only if two test files or more use it (or it is the
# node preamble); the rest stays in its test.  The API is called
# schema-qualified (jq.jq_enqueue), as the tests do.
package PgjqTest;

use strict;
use warnings;
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(new_node alter_system client_env
  create_queue enqueue_jobs lease_and_disconnect
  poll_fast wait_for_worker worker_pid wait_for_counters
  snapshot_tables counters_mismatch churn_sql pgbench_load);

# quote(TEXT): TEXT as an SQL string literal
sub quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

# churn_sql(QUEUE, BATCHES, BATCH_SIZE, SLEEP, UNTIL): a DO block that runs
# BATCHES rounds (or, with UNTIL, rounds while that SQL condition is false)
# of BATCH_SIZE jobs enqueued in one batch, leased together and acked in
# one jq_ack_batch, committing each round, sleeping SLEEP seconds between.
sub churn_sql
{
	my ($queue, $batches, $size, $sleep, $until) = @_;
	my $loop = defined $until ? "WHILE NOT ($until) LOOP" : "FOR i IN 1..$batches LOOP";
	my $q = quote($queue);
	return qq{
DO \$\$BEGIN
$loop
  PERFORM jq.jq_enqueue_batch($q, array_fill('{"text": "copy to score, copy to score"}'::jsonb, ARRAY[$size]));
  PERFORM (WITH d AS MATERIALIZED (SELECT * FROM jq.jq_dequeue($q, $size))
           SELECT count(*) FROM jq.jq_ack_batch((SELECT array_agg(job_id ORDER BY job_id) FROM d),
                                                (SELECT array_agg(lease_token ORDER BY job_id) FROM d),
                                                NULL));
  COMMIT;
  PERFORM pg_sleep($sleep);
END LOOP; END\$\$;};
}

# --- the node ----------------------------------------------------------------

# new_node(NAME, init => {...}, conf => {...}, extension => 1): the node
# preamble.  A new PostgreSQL::Test::Cluster, initialized with the options
# of init (allows_streaming, extra), that preloads pgjq and has the
# settings of conf (name => value) in postgresql.conf; started.  With
# extension, CREATE EXTENSION pgjq in database postgres.
sub new_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} // {} });
	my $conf = $opt{conf} // {};
	$node->append_conf('postgresql.conf',
		join('', "shared_preload_libraries = 'pgjq'\n",
			map { "$_ = " . quote($conf->{$_}) . "\n" } sort keys %$conf));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pgjq') if $opt{extension};
	return $node;
}

# alter_system(NODE, NAME, VALUE): ALTER SYSTEM SET NAME = VALUE (RESET when
# VALUE is undef), then pg_reload_conf()
sub alter_system
{
	my ($node, $name, $value) = @_;
	$node->safe_psql('postgres',
		(defined $value ? "ALTER SYSTEM SET $name = " . quote($value) : "ALTER SYSTEM RESET $name")
		  . '; SELECT pg_reload_conf();');
}

# client_env(NODE, DB): points libpq's environment (PGHOST, PGPORT,
# PGDATABASE) at NODE and DB for the worker programs a test starts, and
# clears the JQ_* variables that would configure them
sub client_env
{
	my ($node, $db) = @_;
	$ENV{PGHOST} = $node->host;
	$ENV{PGPORT} = $node->port;
	$ENV{PGDATABASE} = $db;
	delete $ENV{$_} for grep { /^JQ_/ } keys %ENV;
}

# --- fixtures ----------------------------------------------------------------

# create_queue(NODE, DB, NAME, SETTING => VALUE...): jq.jq_create_queue of
# NAME, with the settings as named arguments (each value an SQL literal)
sub create_queue
{
	my ($node, $db, $name, %settings) = @_;
	my $args = join('', map { ", $_ => " . quote($settings{$_}) } sort keys %settings);
	$node->safe_psql($db, 'SELECT 1 FROM jq.jq_create_queue(' . quote($name) . "$args)");
}

# enqueue_jobs(NODE, DB, QUEUE, PAYLOADS...): one jq.jq_enqueue_batch of the
# payloads (JSON texts) into QUEUE; returns the job ids, in order
sub enqueue_jobs
{
	my ($node, $db, $queue, @payloads) = @_;
	my $array = join(",\n", map { quote($_) } @payloads);
	return split /\n/, $node->safe_psql($db,
		'SELECT unnest(jq.jq_enqueue_batch(' . quote($queue) . ", ARRAY[$array]::jsonb[]))");
}

# lease_and_disconnect(NODE, DB, QUEUE, LEASE_SECONDS): a session leases one
# job of QUEUE for LEASE_SECONDS and disconnects without acking it; returns
# the job id, its lease token and the epoch of its lease expiry
sub lease_and_disconnect
{
	my ($node, $db, $queue, $secs) = @_;
	my $row = $node->safe_psql($db, sprintf(q{
		SELECT job_id, lease_token, extract(epoch FROM lease_expires_at)
		  FROM jq.jq_dequeue(%s, 1, %d)}, quote($queue), $secs));
	my ($id, $token, $expires) = split /\|/, $row;
	die "nothing to lease in queue $queue" unless defined $expires;
	return ($id, $token, $expires);
}

# --- polls -------------------------------------------------------------------

# poll_fast(NODE, DB, SQL, TIMEOUT): runs SQL every 20 ms until it returns
# 't' (an error, say while the database cannot be connected to, counts as
# not yet); returns the seconds waited, or undef after TIMEOUT seconds.
# Finer than poll_query_until (100 ms), for the waits that tests time.
sub poll_fast
{
	my ($node, $db, $sql, $timeout) = @_;
	my $t0 = time;
	while (1)
	{
		my ($rc, $out) = $node->psql($db, $sql);
		return time - $t0 if $rc == 0 && ($out // '') eq 't';
		return undef if time - $t0 > $timeout;
		usleep(20_000);
	}
}

# wait_for_worker(NODE, DB, TIMEOUT): waits until jq.jq_worker_status() in
# DB says that a pgjq worker serves it (status ok, with a pid); returns the
# seconds waited, or undef after TIMEOUT seconds (default: the suite's
# timeout, 180 s)
sub wait_for_worker
{
	my ($node, $db, $timeout) = @_;
	return poll_fast($node, $db,
		q{SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()},
		$timeout // $PostgreSQL::Test::Utils::timeout_default);
}

# worker_pid(NODE, DB): the pid of DB's pgjq worker as jq.jq_worker_status()
# reports it ('' when none)
sub worker_pid
{
	my ($node, $db) = @_;
	return $node->safe_psql($db, 'SELECT worker_pid FROM jq.jq_worker_status()');
}

# wait_for_counters(NODE, DB, QUEUE, CONDITION): waits until the depth
# counters of QUEUE are valid (the worker has rebuilt them) and CONDITION,
# SQL on the columns of jq.queue_stats, if given, holds; false after the
# suite's timeout
sub wait_for_counters
{
	my ($node, $db, $queue, $cond) = @_;
	return $node->poll_query_until($db,
		sprintf(q{SELECT counters_valid%s FROM jq.queue_stats WHERE queue = %s},
			defined $cond ? " AND ($cond)" : '', quote($queue)));
}

# --- pgjq's tables -----------------------------------------------------------

# snapshot_tables(NODE, DB, with_sequence => 1, across_update => 1):
# everything pgjq keeps in its tables (queues, jobs, results, dead letters,
# idempotency keys, batches and their members; with with_sequence, the
# last value of jq.job_id_seq too) as one text, a sorted line per row in
# to_jsonb form: two snapshots are equal when nothing changed.  With
# across_update, NULL columns and the settings an update added with their
# defaults (fair, key_ordered, rate_period) are left out, so that a
# snapshot before an update that added columns compares with one after it.
sub snapshot_tables
{
	my ($node, $db, %opt) = @_;
	my $seq = $opt{with_sequence}
	  ? "\n      UNION ALL SELECT 'seq ' || last_value FROM jq.job_id_seq"
	  : '';
	# across an update, the columns it added, at their defaults, are left out
	my $row = $opt{across_update}
	  ? sub { "(jsonb_strip_nulls(to_jsonb($_[0])) - 'fair' - 'key_ordered' - 'rate_period')::text" }
	  : sub { "to_jsonb($_[0])::text" };
	return $node->safe_psql($db, qq{
	SELECT string_agg(t, E'\\n' ORDER BY t) FROM (
	  SELECT 'queue ' || @{[$row->('q')]} AS t FROM jq.queue q
	  UNION ALL SELECT 'job ' || @{[$row->('j')]} FROM jq.job j
	  UNION ALL SELECT 'result ' || @{[$row->('r')]} FROM jq.job_result r
	  UNION ALL SELECT 'dead ' || @{[$row->('d')]} FROM jq.dead_letter d
	  UNION ALL SELECT 'key ' || to_jsonb(k)::text FROM jq.idempotency_key k
	  UNION ALL SELECT 'batch ' || to_jsonb(b)::text FROM jq.batch b
	  UNION ALL SELECT 'member ' || to_jsonb(m)::text FROM jq.batch_job m$seq) s});
}

# the (queue, priority) lanes whose depth counters (jq.counters()) differ
# from the truth counted in jq.job and jq.dead_letter
my $mismatch = q{
	WITH truth AS (
	    SELECT queue_id, priority::integer AS priority,
	           count(*) FILTER (WHERE state = 'r') AS ready,
	           count(*) FILTER (WHERE state = 's') AS scheduled,
	           count(*) FILTER (WHERE state = 'l') AS leased, 0::bigint AS dead
	      FROM jq.job GROUP BY 1, 2
	    UNION ALL
	    SELECT queue_id, priority, 0, 0, 0, count(*) FROM jq.dead_letter GROUP BY 1, 2),
	t AS (SELECT queue_id, priority, sum(ready) AS ready, sum(scheduled) AS scheduled,
	             sum(leased) AS leased, sum(dead) AS dead FROM truth GROUP BY 1, 2),
	c AS (SELECT * FROM jq.counters()
	       WHERE ready <> 0 OR scheduled <> 0 OR leased <> 0 OR dead <> 0)
	SELECT count(*) FROM t FULL JOIN c USING (queue_id, priority)
	 WHERE t.ready IS DISTINCT FROM c.ready OR t.scheduled IS DISTINCT FROM c.scheduled
	    OR t.leased IS DISTINCT FROM c.leased OR t.dead IS DISTINCT FROM c.dead};

# counters_mismatch(NODE, DB, wait => 1): how many lanes' counters differ
# from the tables ('0' when all agree); with wait, first polls until none
# does (or the suite's timeout)
sub counters_mismatch
{
	my ($node, $db, %opt) = @_;
	$node->poll_query_until($db, $mismatch, '0') if $opt{wait};
	return $node->safe_psql($db, $mismatch);
}


# pgbench_load(NODE, DB, SECONDS, SCRIPTS, RUNS): a load of pgbench
# clients at once, for SECONDS: SCRIPTS maps a name to a pgbench script,
# RUNS lists [name, clients, rate] (rate 0: as fast as they go).  Passes
# one test per run that pgbench ran without error.
sub pgbench_load
{
	my ($node, $db, $seconds, $scripts, $runs) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir;
	for my $name (keys %$scripts)
	{
		open my $fh, '>', "$dir/$name.sql" or die "$dir/$name.sql: $!";
		print $fh $scripts->{$name};
		close $fh;
	}
	my @started;
	for my $run (@$runs)
	{
		my ($name, $clients, $rate) = @$run;
		my ($out, $err) = ('', '');
		push @started, [ $name, IPC::Run::start(
			[ 'pgbench', '-n', '-T', $seconds, '-c', $clients, '-j', $clients,
			  ($rate ? ('-R', $rate) : ()),
			  '-f', "$dir/$name.sql", '-h', $node->host, '-p', $node->port, $db ],
			'>', \$out, '2>', \$err), \$err ];
	}
	for my $r (@started)
	{
		my ($name, $h, $err) = @$r;
		ok($h->finish, "pgbench $name ran without error") or diag($$err);
	}
}
1;
