# Dequeue bounds under races (src/bounds.c).  A dequeue starts each lane at
# its bound and then moves the bound up, so a job that became ready below
# the bound and was not noticed would never be handed out again: it would
# sit in jq.job, ready, while every dequeue returns nothing.  The isolation
# spec lane_bounds.spec steps through each way a job appears below a bound;
# this test runs them all at once, for long enough that commits and
# rollbacks land inside other sessions' dequeues:
#   - producers commit jobs of three priorities, half with a past run_at,
#     two per transaction with a pause between, one transaction in ten
#     rolled back;
#   - workers dequeue 1 to 5 jobs and ack them; one transaction in five
#     rolls back instead, and one in five rolls back to a savepoint;
#   - a canceller cancels a ready job and rolls back;
#   - an operator moves a ready job's run_at back by an hour;
#   - an analyst locks a ready job FOR UPDATE and lets go of it unchanged,
#     which no trigger sees.
# Then the producers stop, and the queue is drained by dequeues alone:
# every job must come out, and the bounds must not have been given up
# (the counters stay valid, so no dequeue fell back to full scans).  Four
# rounds of three seconds.  Without the generation check of
# pgjq_lanes_advance, about half the rounds strand a job.  Then the same
# for the bounds of scheduled jobs and leases (see below).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $rounds = 4;
my $seconds = 3;

my $node = new_node('lanes', extension => 1, conf => { 'pgjq.naptime' => '100ms' });
create_queue($node, 'postgres', 'st', max_attempts => '1000');
ok(poll_fast($node, 'postgres', 'SELECT jq.counters_valid()', 30),
    'the worker built the counters, and with them the bounds');

my %script = (
    produce => q{
\set pr random(0, 2) * 5
\set past random(0, 1)
\set rb random(1, 10)
BEGIN;
SELECT jq.jq_enqueue('st', '{}', priority => :pr,
                     run_at => CASE WHEN :past = 1 THEN now() - interval '10 seconds' * random() END);
SELECT pg_sleep(0.002 * random());
SELECT jq.jq_enqueue('st', '{}', priority => :pr);
\if :rb = 1
ROLLBACK;
\else
COMMIT;
\endif
},
    work => q{
\set n random(1, 5)
\set how random(1, 5)
BEGIN;
\if :how = 2
SAVEPOINT s;
\endif
SELECT count(jq.jq_ack(d.job_id, d.lease_token, NULL)) FROM jq.jq_dequeue('st', :n) d;
\if :how = 1
ROLLBACK;
\elif :how = 2
ROLLBACK TO SAVEPOINT s;
SELECT count(jq.jq_ack(d.job_id, d.lease_token, NULL)) FROM jq.jq_dequeue('st', 1) d;
COMMIT;
\else
COMMIT;
\endif
},
    cancel => q{
BEGIN;
SELECT jq.jq_cancel(id) FROM jq.job WHERE state = 'r' ORDER BY random() LIMIT 1;
SELECT pg_sleep(0.001);
ROLLBACK;
},
    lock => q{
BEGIN;
SELECT id FROM jq.job WHERE state = 'r' ORDER BY random() LIMIT 1 FOR UPDATE;
SELECT pg_sleep(0.002);
COMMIT;
},
    operator => q{
UPDATE jq.job SET run_at = run_at - interval '1 hour'
 WHERE id = (SELECT id FROM jq.job WHERE state = 'r' ORDER BY random() LIMIT 1);
});

# pgbench script weights; a round's script files need names of their own
my %weight = (produce => 4, work => 4, cancel => 1, operator => 1, lock => 1);

# Rounds of racing, each followed by a drain by dequeues alone: no new job
# appears during the drain, so once a dequeue returns nothing, nothing may
# be ready.  A job stranded in the race may be rescued by a later lowering
# under it; checking after every round catches more.
for my $round (1 .. $rounds)
{
	$node->pgbench(
		"--no-vacuum --client=6 --jobs=6 --time=$seconds",
		0,
		[qr{processed: [1-9]}],
		[qr{^$}],
		"round $round: producers, workers, a canceller, an operator and an analyst race "
		  . "for $seconds seconds without an error",
		{
			map { ("017_${_}_r$round\@$weight{$_}" => $script{$_}) }
			  keys %script
		});

	my $left = $node->safe_psql('postgres',
		q{SELECT count(*) FROM jq.job WHERE state = 'r'});
	my $drained = 0;
	for (1 .. 1000)
	{
		my $n = $node->safe_psql('postgres', q{
			SELECT count(jq.jq_ack(d.job_id, d.lease_token, NULL))
			  FROM jq.jq_dequeue('st', 100) d});
		last if $n == 0;
		$drained += $n;
	}
	note "round $round: $left jobs ready after the race, $drained drained";
	is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.job WHERE state = 'r'}),
		'0', "round $round: once a dequeue returns nothing, no job is left ready (none stranded below a bound)");
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM jq.scan_bounds() b JOIN jq.queue q USING (queue_id)
			 WHERE q.name = 'st' AND b.state = 'ready'}),
		'0', "round $round: the last dequeue found every lane of the drained queue empty");
}

# The bounds of scheduled jobs and of leases, which the promotion and the
# reclaim (the worker's, and jq_dequeue's probe for due jobs) start from.
# Producers schedule jobs a moment ahead; workers fail jobs for a retry a
# moment later, abandon leases of one second, or shorten a lease to one
# second with jq_extend and abandon it, and roll some of that back.  After
# the race, the queue must empty by dequeues and acks alone, with the
# worker promoting and reclaiming: a job stranded below a bound would stay
# scheduled or leased for ever.
my %later = (
    produce => q{
\set ahead random(0, 300)
SELECT jq.jq_enqueue('st', '{}', run_at => now() + :ahead * interval '1 millisecond');
},
    fail => q{
\set rb random(1, 5)
BEGIN;
SELECT count(jq.jq_fail(d.job_id, d.lease_token, 'again', retry_in => random() * interval '0.3 seconds'))
  FROM jq.jq_dequeue('st', 2) d;
\if :rb = 1
ROLLBACK;
\else
COMMIT;
\endif
},
    abandon => q{
SELECT count(*) FROM jq.jq_dequeue('st', 1, lease_seconds => 1);
},
    shorten => q{
\set rb random(1, 5)
BEGIN;
SELECT count(jq.jq_extend(d.job_id, d.lease_token, 1)) FROM jq.jq_dequeue('st', 1) d;
\if :rb = 1
ROLLBACK;
\else
COMMIT;
\endif
},
    work => $script{work});
my %later_weight = (produce => 4, fail => 2, abandon => 1, shorten => 1, work => 3);
for my $round (1 .. 2)
{
	$node->pgbench(
		"--no-vacuum --client=6 --jobs=6 --time=$seconds",
		0,
		[qr{processed: [1-9]}],
		[qr{^$}],
		"scheduled and leased, round $round: producers, failing, abandoning "
		  . "and shortening workers race for $seconds seconds without an error",
		{
			map { ("017_later_${_}_r$round\@$later_weight{$_}" => $later{$_}) }
			  keys %later
		});
	note "scheduled and leased, round $round: "
	  . $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(state::text || ' ' || n, ', '), 'empty') FROM
		    (SELECT state, count(*) AS n FROM jq.job GROUP BY state ORDER BY state) s});
	ok( poll_fast($node, 'postgres', q{
			SELECT count(jq.jq_ack(d.job_id, d.lease_token, NULL)) = 0
			   AND NOT EXISTS (SELECT FROM jq.job)
			  FROM jq.jq_dequeue('st', 100) d}, 60),
		"scheduled and leased, round $round: every job is promoted or reclaimed "
		  . 'and handed out: none stranded below a bound');
}

is($node->safe_psql('postgres', 'SELECT jq.counters_valid()'),
	't', 'the bounds were trusted throughout (counters valid)');

# the counters agree with the tables
is(counters_mismatch($node, 'postgres', wait => 1), '0', 'counters match the tables');

$node->stop;
done_testing();
