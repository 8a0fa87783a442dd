# Long-poll dequeue and await with real sessions (src/waiters.c,
# src/longpoll.c): what a waiting call holds (the procedures: no snapshot,
# no lock, no xid; the functions: their statement's snapshot, no lock), many
# waiters for one job (the longest waiting takes it, the others wait on),
# the wakes the background worker gives (a due scheduled job, a reclaimed
# lease, a freed concurrency slot, a rate budget back) each well before the
# 5 s a waiter looks again unwoken, cancellation and statement_timeout, and
# a fast shutdown ending every wait at once.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('longpoll', extension => 1, conf => {
	'pgjq.database' => 'postgres',
	'pgjq.naptime' => '100ms' });
wait_for_worker($node, 'postgres') or die 'no worker';
create_queue($node, 'postgres', 'lp', backoff_base => '10 ms');

# start_waiter(SQL...): a psql session running the SQL commands in the
# background; its output (unaligned, tuples only) and errors collect in the
# returned hash
sub start_waiter
{
	my (@sql) = @_;
	my %w = (out => '', err => '', t0 => time);
	$w{h} = IPC::Run::start(
		[ 'psql', '-X', '-qAt', '-d', $node->connstr('postgres'), map { ('-c', $_) } @sql ],
		'>', \$w{out}, '2>', \$w{err});
	return \%w;
}

# finish(WAITER): waits for it to end; returns its output, and sets
# $w->{secs} to how long it ran
sub finish
{
	my ($w) = @_;
	$w->{h}->finish;
	$w->{secs} = time - $w->{t0};
	chomp $w->{out};
	return $w->{out};
}

# waiting(N): waits until N sessions wait in a pgjq call (wait event
# Extension, as the calls report it)
sub waiting
{
	my ($n) = @_;
	defined poll_fast($node, 'postgres', qq{
		SELECT count(*) = $n FROM pg_stat_activity
		 WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'}, 30)
	  or die "never $n waiting sessions";
}

my $fn_wait = q{SELECT count(*), extract(epoch FROM clock_timestamp())
                  FROM jq.jq_dequeue('lp', 1, NULL, wait => '%s')};
my $proc_wait = q{CALL jq.jq_wait_dequeue('lp', 1, NULL, '%s', NULL)};

# --- what a wait holds --------------------------------------------------------
my $pw = start_waiter(sprintf $proc_wait, '30 s');
waiting(1);
my $fw = start_waiter(sprintf $fn_wait, '30 s');
waiting(2);
my $held = $node->safe_psql('postgres', q{
	SELECT string_agg(format('%s xmin=%s xid=%s locks=%s',
	                         CASE WHEN a.query LIKE 'CALL%' THEN 'procedure' ELSE 'function' END,
	                         a.backend_xmin IS NOT NULL, a.backend_xid IS NOT NULL,
	                         (SELECT count(*) FROM pg_locks l
	                           WHERE l.pid = a.pid AND l.locktype = 'relation')), ', ' ORDER BY a.query)
	  FROM pg_stat_activity a
	 WHERE a.wait_event_type = 'Extension' AND a.backend_type = 'client backend'});
is($held, 'procedure xmin=f xid=f locks=0, function xmin=t xid=f locks=0',
   'a waiting procedure holds no snapshot, xid or lock; a waiting function its snapshot only');
# no lock held: a counter rebuild's SHARE locks are granted while they wait
is($node->safe_psql('postgres', q{SELECT jq.rebuild_counters(1000)}), 't',
   'a counter rebuild runs while workers wait');

# --- many waiters, one job ----------------------------------------------------
# the procedure waited first: it takes the first job, the function the second
my $t0 = $node->safe_psql('postgres', q{
	SELECT jq.jq_enqueue('lp', '{"n": 1}') > 0, extract(epoch FROM clock_timestamp())});
(undef, $t0) = split /\|/, $t0;
like(finish($pw), qr/"n": 1/, 'the longest waiting takes the job');
ok($pw->{secs} < 10, 'at once');
my $w3 = start_waiter(sprintf $fn_wait, '2 s');
my $w4 = start_waiter(sprintf $fn_wait, '2 s');
waiting(3);
my $committed = $node->safe_psql('postgres', q{
	SELECT jq.jq_enqueue('lp', '{"n": 2}') > 0, extract(epoch FROM clock_timestamp())});
(undef, $committed) = split /\|/, $committed;
my ($got, $at) = split /\|/, finish($fw);
is($got, 1, 'the next longest waiting takes the next job');
# from the enqueue's last statement (just before its commit) to the waiter's
# return, on the server's clock: the wakeup, not the 5 s look again
my $ms = ($at - $committed) * 1000;
note sprintf('a waiting function returned %.2f ms after the enqueue', $ms);
cmp_ok($ms, '<', 500, 'within milliseconds of the commit');
for my $w ($w3, $w4)
{
	is(finish($w) =~ s/\|.*//r, '0', 'the others are not handed it');
	ok($w->{secs} >= 1.9, 'and wait on until their timeout');
}

# --- a woken waiter sees what woke it ---------------------------------------------
# The wakeup must come after the committing transaction applied what a
# dequeue reads besides the rows (its scan bounds, its keys): a waiter woken
# before that scans from a stale bound, finds nothing and sleeps through
# its wakeup.  40 rounds of one job, 150 ms apart, to one waiting worker:
# each taken at once (a lost wakeup waits for the next round).
create_queue($node, 'postgres', 'race');
{
	my $w = start_waiter(join("\n", map { "SELECT count(*) FROM jq.jq_dequeue('race', 1, NULL, wait => '3 s');" } 1 .. 40));
	waiting(1);
	$node->safe_psql('postgres', q{
		DO $$BEGIN
		FOR i IN 1..40 LOOP
		    PERFORM jq.jq_enqueue('race', '{}');
		    COMMIT;
		    PERFORM pg_sleep(0.15);
		END LOOP; END$$});
	finish($w);
	is($w->{out}, join("\n", (1) x 40), '40 long polls, each got its job');
	my ($late, $worst) = split /\|/, $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE started_at - enqueued_at > interval '120 ms'),
		       round(extract(epoch FROM max(started_at - enqueued_at)) * 1000)
		  FROM jq.job j JOIN jq.queue q USING (queue_id) WHERE q.name = 'race'});
	note "slowest pickup of the 40: $worst ms";
	is($late, 0, 'each taken within 120 ms of its enqueue: no wakeup slept through');
}

# --- the worker's wakes --------------------------------------------------------
# each wait is 30 s; each wake should come well before the 5 s recheck
sub woken_within
{
	my ($what, $limit, $setup) = @_;
	my $t = time;
	$setup->();
	my $w = start_waiter(sprintf $fn_wait, '30 s');
	my ($n) = split /\|/, finish($w);
	my $secs = time - $t;
	is($n, 1, "$what: the waiting worker gets the job");
	ok($secs < $limit, "$what: within $limit s (took " . sprintf('%.2f', $secs) . ' s)');
}

woken_within('a scheduled job coming due', 3, sub {
	$node->safe_psql('postgres',
		q{SELECT jq.jq_enqueue('lp', '{}', run_at => clock_timestamp() + interval '1 s')});
});
woken_within('a lease reclaimed', 3, sub {
	$node->safe_psql('postgres', q{SELECT jq.jq_enqueue('lp', '{}')});
	# taken by another session for 1 s and never acked
	lease_and_disconnect($node, 'postgres', 'lp', 1);
});
create_queue($node, 'postgres', 'lim', max_in_flight => 1);
$node->safe_psql('postgres', q{SELECT count(jq.jq_enqueue('lim', '{}')) FROM generate_series(1, 2)});
my ($id, $tok) = split /\|/, $node->safe_psql('postgres', q{
	SELECT job_id, lease_token FROM jq.jq_dequeue('lim')});
{
	# woken by the second job's enqueue, finds the queue full, waits again
	my $w = start_waiter(q{SELECT count(*), 0 FROM jq.jq_dequeue('lim', 1, NULL, wait => '30 s')});
	waiting(1);
	usleep(300_000);
	is($w->{out}, '', 'a queue at its limit: the waiter waits on');
	my $t = time;
	$node->safe_psql('postgres', "SELECT jq.jq_ack($id, $tok)");
	is(finish($w) =~ s/\|.*//r, '1', 'a freed concurrency slot wakes it');
	ok(time - $t < 2, 'at once');
}
create_queue($node, 'postgres', 'rate', rate_requests => 1, rate_period => '2 seconds');
$node->safe_psql('postgres', q{
	SELECT count(jq.jq_enqueue('rate', '{}')) FROM generate_series(1, 3)});
sleep 2.1;    # a bucket fills from the start of the counts
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('rate', 10)}), '1',
   'one job a period');
{
	my $t = time;
	my $w = start_waiter(q{SELECT count(*), 0 FROM jq.jq_dequeue('rate', 10, NULL, wait => '30 s')});
	is(finish($w) =~ s/\|.*//r, '1', 'a waiter gets the next when the budget is back');
	ok(time - $t < 3.5, 'in about a period (took ' . sprintf('%.2f', time - $t) . ' s)');
}

# --- awaiting a result ----------------------------------------------------------
my $jid = $node->safe_psql('postgres', q{SELECT jq.jq_enqueue('lp', '{"await": 1}')});
my (undef, $jtok) = split /\|/, $node->safe_psql('postgres', q{
	SELECT job_id, lease_token FROM jq.jq_dequeue('lp')});
my $aw = start_waiter("SELECT state, result FROM jq.jq_await($jid, '30 s')");
my $ap = start_waiter("CALL jq.jq_wait_result($jid, '30 s', NULL)");
waiting(2);
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE query LIKE 'CALL jq.jq_wait_result%' AND backend_xmin IS NULL}), '1',
   'an awaiting procedure holds no snapshot');
$node->safe_psql('postgres', qq{SELECT jq.jq_ack($jid, $jtok, '{"score": 0.9}')});
is(finish($aw), 'succeeded|{"score": 0.9}', 'jq_await returns the result at the ack');
like(finish($ap), qr/"state": "succeeded"/, 'and so does jq_wait_result');
ok($aw->{secs} < 10 && $ap->{secs} < 10, 'at once');

# --- cancellation -----------------------------------------------------------------
my $c1 = start_waiter(sprintf $fn_wait, '30 s');
waiting(1);
my $c2 = start_waiter(sprintf $fn_wait, '30 s');
waiting(2);
$node->safe_psql('postgres', q{
	SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	 WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'
	 ORDER BY backend_start LIMIT 1});
finish($c1);
like($c1->{err}, qr/canceling statement due to user request/, 'pg_cancel_backend ends a wait');
ok($c1->{secs} < 10, 'at once');
# the cancelled session left the line: the job goes to the one still waiting
$node->safe_psql('postgres', q{SELECT jq.jq_enqueue('lp', '{}')});
is(finish($c2) =~ s/\|.*//r, '1', 'and the next job goes to the one still waiting');
ok($c2->{secs} < 10, 'at once');
my $st = start_waiter("SET statement_timeout = '300ms'", sprintf($fn_wait, '30 s'));
finish($st);
like($st->{err}, qr/canceling statement due to statement timeout/, 'statement_timeout ends a wait');
ok($st->{secs} < 5, 'on time');
my $sp = start_waiter("SET statement_timeout = '300ms'", sprintf($proc_wait, '30 s'));
finish($sp);
like($sp->{err}, qr/canceling statement due to statement timeout/, 'and a waiting procedure');

# --- a worker killed while it waits ----------------------------------------------------
# its session must not take the job it is woken for: the lease would commit
# and the job wait it out
my $dead = start_waiter(sprintf $fn_wait, '30 s');
waiting(1);
$dead->{h}->signal('KILL');
$dead->{h}->finish;
$node->safe_psql('postgres', q{SELECT jq.jq_enqueue('lp', '{"dead": "client"}')});
defined poll_fast($node, 'postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity
	 WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'}, 30)
  or die 'the killed client\'s session never ended';
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM jq.jq_dequeue('lp') WHERE payload ->> 'dead' = 'client'}), '1',
	'the session of a killed client ends at its wakeup and leaves the job to the others');

# --- shutdown ------------------------------------------------------------------------
my $pending = $node->safe_psql('postgres', q{
	SELECT jq.jq_enqueue('lp', '{}', run_at => clock_timestamp() + interval '1 hour')});
my @w = map { start_waiter($_) } (sprintf($fn_wait, '60 s'), sprintf($proc_wait, '60 s'),
	"SELECT * FROM jq.jq_await($pending, '60 s')");
waiting(3);
my $t = time;
$node->stop('fast');
ok(time - $t < 10, 'a fast shutdown does not wait for the waits');
for my $w (@w)
{
	finish($w);
	like($w->{err}, qr/terminating connection due to administrator command|server closed the connection/,
		 'each wait ended by the shutdown');
}
$node->start;
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('lp', 1, NULL, wait => '0.1 s')}),
   '0', 'and waits work after the restart');

$node->stop;
done_testing();
