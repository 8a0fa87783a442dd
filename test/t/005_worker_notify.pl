# Wakeups: the pgjq worker sends NOTIFY jq_<queue> when a queue gets ready
# jobs, coalesced per pgjq.notify_interval, and producers never NOTIFY.
#   - a LISTENing session hears of an enqueue within a second of its commit,
#     from the worker; not of a rolled-back enqueue, nor of one whose
#     savepoint was rolled back; and only on the queue's own channel;
#   - a quiet queue's commits are each announced at once (the leading
#     edge): 20 enqueues 20 ms apart make 20 notifications;
#   - a busy queue's are coalesced: 2,000 enqueuing transactions as fast as
#     5 clients go make at most one notification per notify_interval window
#     (plus the edges, while the worker sees the load rise);
#   - a scheduled job wakes the listeners when it comes due, not before;
#   - so do a reclaimed lease, jq_redrive and jq_fail with retry_in => '0';
#   - the pickup latency, commit to notification, is measured (median and
#     max of 20 samples) and each must be below a second.
# The defaults apply: pgjq.naptime 1s, pgjq.notify_interval 10ms.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use POSIX qw(ceil);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $notify_interval = 0.01;    # seconds, the default pgjq.notify_interval

my $node = new_node('notify', extension => 1);
create_queue($node, 'postgres', 'q');
create_queue($node, 'postgres', 'other');
$node->safe_psql('postgres', 'CREATE TABLE unrelated (x int)');
ok(defined wait_for_worker($node, 'postgres'), 'the pgjq worker runs');
# counters that lose their validity (here reset by hand, as CREATE
# EXTENSION does) are rebuilt at the worker's next pass (pgjq.naptime,
# 1 s), not at its next statistics tick, stretched here to a minute
alter_system($node, 'pgjq.stats_interval', '60s');
sleep 1;
my $t0 = time;
$node->safe_psql('postgres', 'SELECT jq.reset_counters()');
ok($node->poll_query_until('postgres', q{SELECT bool_and(counters_valid) FROM jq.queue_stats}),
	'counters become valid again after a reset');
cmp_ok(time - $t0, '<', 5, sprintf('within a few seconds (%.1f s), not at the next statistics tick',
		time - $t0));
alter_system($node, 'pgjq.stats_interval', undef);
my $worker = worker_pid($node, 'postgres');
is($node->safe_psql('postgres', 'SHOW pgjq.notify_interval'),
	'10ms', 'pgjq.notify_interval has its default, 10ms');

# quiet(SESSION, SQL): query_safe without BackgroundPsql's notes, which
# would flood the log from the polling loops below
sub quiet
{
	my ($session, $sql) = @_;
	no warnings 'redefine';
	local *PostgreSQL::Test::BackgroundPsql::note = sub { };
	return $session->query_safe($sql);
}

my $listener = $node->background_psql('postgres');
$listener->set_query_timer_restart;
# the polling below would fill the server log with "SELECT 1"
$listener->query_safe(q{SET log_statement = 'none'; LISTEN jq_q; LISTEN jq_other});

# notifications(): runs a cheap query in the listening session, so that
# psql prints the notifications that arrived; returns them as
# [channel, sending pid] pairs
sub notifications
{
	my $out = quiet($listener, 'SELECT 1');
	my @got;
	while ($out =~
		/^Asynchronous notification "(\w+)" received from server process with PID (\d+)\.$/mg)
	{
		push @got, [ $1, $2 ];
	}
	return @got;
}

# count notifications on jq_q in a list of them
sub on_q { return scalar grep { $_->[0] eq 'jq_q' } @_; }

# listen_for(SECONDS): collects the notifications of the next SECONDS
sub listen_for
{
	my ($secs) = @_;
	my $t0 = time;
	my @got;
	while (time - $t0 < $secs)
	{
		push @got, notifications();
		usleep(5_000);
	}
	push @got, notifications();
	return @got;
}

# wait_q(TIMEOUT): polls until a notification on jq_q arrives; returns the
# time it was seen (epoch seconds) and all notifications seen, or undef
# after TIMEOUT seconds
sub wait_q
{
	my ($timeout) = @_;
	my $t0 = time;
	while (1)
	{
		my @got = notifications();
		return (time, @got) if on_q(@got);
		return undef if time - $t0 > $timeout;
		usleep(1_000);
	}
}

# nothing has been announced yet
is(on_q(listen_for(0.3)), 0, 'a new listener hears nothing on an idle queue');

# --- a committed enqueue wakes the listener ----------------------------------

my $producer = $node->background_psql('postgres');
$producer->set_query_timer_restart;
$producer->query_safe(q{BEGIN; SELECT jq.jq_enqueue('q', '{"n": 1}');});
is(on_q(listen_for(0.3)), 0, 'nothing is announced before the enqueue commits');
my $commit_at = time;
$producer->query_safe('COMMIT');
my ($seen_at, @got) = wait_q(5);
ok(defined $seen_at, 'the listener is notified of the committed enqueue');
cmp_ok($seen_at - $commit_at, '<', 1, 'within a second of the commit');
is_deeply(\@got, [ [ 'jq_q', $worker ] ],
	'one notification on jq_q, sent by the pgjq worker');
is(on_q(listen_for(0.3)), 0, 'and only one');

# --- rolled back work announces nothing ---------------------------------------

$node->safe_psql('postgres', q{
	BEGIN;
	SELECT jq.jq_enqueue('q', '{"rolled back": "transaction"}');
	ROLLBACK;
});
is(scalar listen_for(1), 0, 'a rolled-back enqueue notifies nobody (1 s)');

$node->safe_psql('postgres', q{
	BEGIN;
	SAVEPOINT s;
	SELECT jq.jq_enqueue('q', '{"rolled back": "savepoint"}');
	ROLLBACK TO SAVEPOINT s;
	INSERT INTO unrelated VALUES (1);
	COMMIT;
});
is($node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM unrelated) || ','
		    || (SELECT count(*) FROM jq.job WHERE payload ? 'rolled back')}),
	'1,0', 'the transaction committed without the rolled-back enqueues');
is(scalar listen_for(1), 0,
	'an enqueue rolled back to a savepoint notifies nobody, though its transaction commits (1 s)');

# a released savepoint's enqueue commits with its transaction
$node->safe_psql('postgres', q{
	BEGIN;
	SAVEPOINT s;
	SELECT jq.jq_enqueue('q', '{"n": "released savepoint"}');
	RELEASE SAVEPOINT s;
	COMMIT;
});
ok(defined wait_q(5), 'an enqueue in a released savepoint notifies at commit');

# each queue has its channel
$node->safe_psql('postgres', q{SELECT jq.jq_enqueue('other', '{}')});
my @other = listen_for(0.5);
is_deeply(\@other, [ [ 'jq_other', $worker ] ],
	'an enqueue into queue "other" notifies jq_other, not jq_q');

# --- coalescing ----------------------------------------------------------------

is(scalar listen_for(0.2), 0, 'quiet before the burst');
# a quiet queue: every commit is announced at once
$node->safe_psql('postgres', q{
	DO $$BEGIN
	FOR i IN 1..20 LOOP
	    PERFORM jq.jq_enqueue('q', '{"quiet": true}');
	    COMMIT;
	    PERFORM pg_sleep(0.02);
	END LOOP; END$$});
is(on_q(listen_for(0.2)), 20, 'a quiet queue: each of 20 commits 20 ms apart is announced');

# a busy one: coalesced
my $burst_start = time;
$node->pgbench(
	'--no-vacuum --client=5 --jobs=5 --transactions=400',
	0,
	[qr{processed: 2000/2000}],
	[qr{^$}],
	'pgbench: 2000 enqueuing transactions, as fast as 5 clients go',
	{ '005_worker_notify_enqueue' => q{SELECT jq.jq_enqueue('q', '{}');} },
	'postgres');
my $burst_end = time;
# the last wakeups may still be in the coalescing window
my @burst = listen_for(4 * $notify_interval);
my $elapsed = time - $burst_start;
my $windows = ceil($elapsed / $notify_interval);
my $count = on_q(@burst);
note sprintf('2000 commits in %.2f s; %d notifications over %.2f s (%d windows of 10 ms)',
	$burst_end - $burst_start, $count, $elapsed, $windows);
cmp_ok($count, '>=', 1, 'the burst wakes the listener');
cmp_ok($count, '<=', $windows + 5,
	'at most one notification per 10 ms window (+5 for the edges)');
cmp_ok(2000 / ($burst_end - $burst_start), '>', 1000,
	'the burst was busy: over 1,000 commits a second');
cmp_ok($count, '<', 400, 'far fewer notifications than the 2000 commits');
is(scalar(grep { $_->[1] ne $worker } @burst), 0, 'all sent by the worker');
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM jq.job j JOIN jq.queue USING (queue_id)
		 WHERE name = 'q' AND payload = '{}'}),
	'2000', 'all 2000 jobs are there');

# drain queue q, so that the next sections start from an empty queue
$node->safe_psql('postgres', q{
	CREATE TABLE drained AS SELECT job_id, lease_token FROM jq.jq_dequeue('q', 10000);
	SELECT count(*) FROM drained WHERE jq.jq_ack(job_id, lease_token);
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM jq.job'),
	'1', 'the queues are drained but for the job of queue "other"');
is(scalar listen_for(0.2), 0, 'dequeues and acks notify nobody');

# --- a scheduled job wakes the listeners when it comes due -------------------

my $sid = $node->safe_psql('postgres', q{
	SELECT jq.jq_enqueue('q', '{"n": "scheduled"}',
	                  run_at => clock_timestamp() + interval '1.5 s')});
my $due = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM run_at) FROM jq.job WHERE id = $sid");
is($node->safe_psql('postgres', "SELECT state FROM jq.jq_result($sid)"),
	'scheduled', 'a job is scheduled 1.5 s ahead');
my @early;
while (time < $due - 0.05)
{
	push @early, notifications();
	usleep(5_000);
}
is(on_q(@early), 0, 'no notification before the job is due');
($seen_at) = wait_q(10);
ok(defined $seen_at, 'a notification comes once it is due');
note sprintf('scheduled job: notified %.3f s after its run_at', $seen_at - $due);
cmp_ok($seen_at, '>=', $due, 'not before its run_at');
cmp_ok($seen_at - $due, '<', 1, 'within a second of its run_at');
is($node->safe_psql('postgres', "SELECT state FROM jq.job WHERE id = $sid"),
	'r', 'the worker promoted it to ready');
my ($sjob, $stoken) = split /\|/,
  $node->safe_psql('postgres', q{SELECT job_id, lease_token FROM jq.jq_dequeue('q', 1)});
is($sjob, $sid, 'jq_dequeue gets the job');

# --- a reclaimed lease wakes the listeners ------------------------------------

$node->safe_psql('postgres', "SELECT jq.jq_ack($sid, $stoken)");
my $lid = $node->safe_psql('postgres', q{SELECT jq.jq_enqueue('q', '{"n": "lease"}')});
ok(defined wait_q(5), 'enqueued a job (and heard of it)');
my ($ljob, $ltoken, $lexpires) = lease_and_disconnect($node, 'postgres', 'q', 2);
is($ljob, $lid, 'it is leased for 2 seconds and not acked');
@early = ();
while (time < $lexpires - 0.05)
{
	push @early, notifications();
	usleep(5_000);
}
is(on_q(@early), 0, 'no notification while the lease stands');
($seen_at) = wait_q(10);
ok(defined $seen_at, 'a notification comes when the lease is reclaimed');
note sprintf('reclaimed lease: notified %.3f s after the expiry', $seen_at - $lexpires);
cmp_ok($seen_at - $lexpires, '<', 1, 'within a second of the expiry');
is($node->safe_psql('postgres', "SELECT state, last_error FROM jq.jq_result($lid)"),
	'ready|lease expired', 'the job is ready again, its lease expired');

# --- jq_fail with retry_in => '0' wakes the listeners --------------------------

($ljob, $ltoken) = split /\|/,
  $node->safe_psql('postgres', q{SELECT job_id, lease_token FROM jq.jq_dequeue('q', 1)});
is($ljob, $lid, 'the job is leased again');
is(scalar listen_for(0.2), 0, 'quiet');
is($node->safe_psql('postgres', "SELECT jq.jq_fail($ljob, $ltoken, 'boom', retry_in => '0')"),
	'ready', 'jq_fail with retry_in => 0 makes it ready at once');
ok(defined wait_q(1), 'and notifies within a second');

# --- jq_redrive wakes the listeners --------------------------------------------

($ljob, $ltoken) = split /\|/,
  $node->safe_psql('postgres', q{SELECT job_id, lease_token FROM jq.jq_dequeue('q', 1)});
is($node->safe_psql('postgres', "SELECT jq.jq_fail($ljob, $ltoken, 'fatal', permanent => true)"),
	'dead', 'a permanent failure makes the job a dead letter');
is(scalar listen_for(0.3), 0, 'which notifies nobody');
is($node->safe_psql('postgres', q{SELECT jq.jq_redrive('q')}),
	'1', 'jq_redrive puts it back');
ok(defined wait_q(1), 'and notifies within a second');
is($node->safe_psql('postgres', q{SELECT job_id FROM jq.jq_dequeue('q', 1)}),
	$lid, 'the redriven job can be dequeued');

# --- pickup latency -------------------------------------------------------------

my @latency;
for my $i (1 .. 20)
{
	# leave the coalescing window of the previous notification
	usleep(100_000);
	quiet($producer, qq{BEGIN; SELECT jq.jq_enqueue('q', '{"sample": $i}');});
	my $t0 = time;
	quiet($producer, 'COMMIT');
	my ($t1) = wait_q(5);
	push @latency, defined $t1 ? $t1 - $t0 : 5;
}
my @sorted = sort { $a <=> $b } @latency;
my $median = ($sorted[9] + $sorted[10]) / 2;
note sprintf('pickup latency, COMMIT sent to notification seen, 20 samples: '
	  . 'median %.1f ms, min %.1f ms, max %.1f ms',
	1000 * $median, 1000 * $sorted[0], 1000 * $sorted[-1]);
is(scalar(grep { $_ >= 1 } @latency), 0, 'every one of 20 samples is below 1 s');

$producer->quit;
$listener->quit;
$node->stop;
done_testing();
