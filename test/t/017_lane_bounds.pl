# Dequeue bounds under races (src/lanes.c).  A dequeue starts each lane at
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
# pgjq_lanes_advance, about half the rounds strand a job.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $rounds = 4;
my $seconds = 3;

my $node = new_node('lanes', extension => 1);
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
			SELECT count(*) FROM jq.lane_bounds() b JOIN jq.queue q USING (queue_id)
			 WHERE q.name = 'st'}),
		'0', "round $round: the last dequeue found every lane of the drained queue empty");
}
is($node->safe_psql('postgres', 'SELECT jq.counters_valid()'),
	't', 'the bounds were trusted throughout (counters valid)');

# the counters agree with the tables
is(counters_mismatch($node, 'postgres', wait => 1), '0', 'counters match the tables');

$node->stop;
done_testing();
