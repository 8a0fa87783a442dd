# Flow control across crashes and restarts (src/keys.c): the keys' counts
# and slots live in shared memory, which a crash empties.  Limits hold
# after a kill -9 with leases out (nothing is handed out until the worker
# has recounted the keys from the tables, and then the leases of before
# count); the slots of a killed worker come back when its leases are
# reclaimed; a session terminated in the middle of a dequeue gives its
# slots back; an ordered key stays held by its lease of before a crash;
# the keys' counts equal the tables throughout.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('keys', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '200ms',
    'pgjq.stats_interval' => '1s' });
create_queue($node, 'postgres', 'k', max_in_flight => 4, key_max_in_flight => 2, fair => 'true');
$node->safe_psql('postgres', q{
    SELECT 1 FROM jq.jq_set_key_policy('k', 'a', weight => 2);
    SELECT cardinality(jq.jq_enqueue_batch('k', array_fill('{}'::jsonb, ARRAY[20]),
                                           keys => array_fill(k, ARRAY[20])))
      FROM unnest(ARRAY['a', 'b', 'c']) AS k;
});
wait_for_counters($node, 'postgres', 'k') or die 'counters never became valid';

# the keys' counts against the truth counted in jq.job: rows that differ
my $key_mismatch = q{
    WITH truth AS (
        SELECT key, count(*) FILTER (WHERE state = 'r') AS ready,
               count(*) FILTER (WHERE state = 's') AS scheduled,
               count(*) FILTER (WHERE state = 'l') AS in_flight
          FROM jq.job WHERE queue_id = jq.queue_id('k') GROUP BY key)
    SELECT count(*) FROM truth t
      FULL JOIN (SELECT * FROM jq.key_stats WHERE queue = 'k') s
        ON coalesce(s.key, '') = coalesce(t.key, '')
     WHERE (coalesce(t.ready, 0), coalesce(t.scheduled, 0), coalesce(t.in_flight, 0))
           IS DISTINCT FROM (coalesce(s.ready, 0), coalesce(s.scheduled, 0), coalesce(s.in_flight, 0))};
my $leased_by_key = q{SELECT coalesce(string_agg(key || '=' || n, ',' ORDER BY key), '')
    FROM (SELECT key, count(*) AS n FROM jq.job WHERE state = 'l' GROUP BY key) l};
# the worst excess over the limits: 0 when every limit holds
my $over = q{SELECT greatest(
    (SELECT count(*) FROM jq.job WHERE state = 'l') - 4,
    (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM jq.job
                                       WHERE state = 'l' GROUP BY key) l) - 2)};

# four leases out, to the queue's limit, two keys at theirs
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '4',
   'four leases: the queue\'s limit');
is($node->safe_psql('postgres', $key_mismatch), '0', 'the keys\' counts equal the tables');

# kill -9: shared memory is gone with the slots it counted
$node->stop('immediate');
$node->start;
# before and after the recount, nothing is handed out: the limit is taken
my $early = $node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)});
is($early, '0', 'right after the crash nothing is handed out');
wait_for_counters($node, 'postgres', 'k') or die 'counters never rebuilt after the crash';
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '0',
   'after the recount, the leases of before the crash hold the limit');
is($node->safe_psql('postgres', $key_mismatch), '0', 'the keys\' counts were rebuilt from the tables');
is($node->safe_psql('postgres', q{SELECT weight FROM jq.key_stats WHERE queue = 'k' AND key = 'a'}),
   '2', 'and the policies were loaded again');
is($node->safe_psql('postgres', $over), '0', 'no limit exceeded');

# the worker that held those leases is gone: once they expire and are
# reclaimed, their slots come back
my $before = $node->safe_psql('postgres', $leased_by_key);
$node->safe_psql('postgres', q{
    UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 second' WHERE state = 'l'});
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM jq.job WHERE state = 'l'})
  or die 'expired leases were not reclaimed';
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '4',
   "reclaimed leases free their slots ($before before)");
is($node->safe_psql('postgres', $over), '0', 'no limit exceeded');

# a session terminated between its dequeue and its commit gives its slots
# back (its transaction aborts)
$node->safe_psql('postgres', q{
    SELECT count(*) FILTER (WHERE jq.jq_ack(id, lease_token, NULL)) FROM jq.job WHERE state = 'l'});
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
    [ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
      q{BEGIN; SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600); SELECT pg_sleep(600);} ],
    '>', \$out, '2>', \$err);
$node->poll_query_until('postgres', q{SELECT EXISTS (SELECT FROM pg_stat_activity
    WHERE query LIKE '%pg_sleep(600)%' AND wait_event = 'PgSleep')})
  or die 'the dequeuing session never got to its sleep';
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '0',
   'its uncommitted leases hold the slots');
$node->safe_psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()});
$h->finish;
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '4',
   'once it is terminated, the next worker gets them');
is($node->safe_psql('postgres', $key_mismatch), '0', 'the keys\' counts equal the tables');
is($node->safe_psql('postgres', $over), '0', 'no limit exceeded');

# a worker waiting on LISTEN is woken when a slot frees: the queue is at
# its limit with jobs ready; an ack commits; the worker NOTIFYs the queue
sub listen_for
{
	my ($secs, $action) = @_;
	my ($lout, $lerr) = ('', '');
	my $l = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', 'LISTEN jq_k',
		  '-c', "SELECT pg_sleep($secs)" ],
		'>', \$lout, '2>', \$lerr);
	$node->poll_query_until('postgres', q{SELECT EXISTS (SELECT FROM pg_stat_activity
		WHERE query LIKE 'SELECT pg_sleep(%' AND wait_event = 'PgSleep')})
	  or die 'the listener never got to its sleep';
	$action->() if $action;
	$l->finish;
	return $lout =~ /Asynchronous notification "jq_k"/ ? 1 : 0;
}
is(listen_for(2, undef), 0, 'at its limit, a waiting worker hears nothing');
is(listen_for(3, sub {
	$node->safe_psql('postgres', q{
		SELECT jq.jq_ack(id, lease_token, NULL) FROM jq.job WHERE state = 'l' LIMIT 1});
}), 1, 'an ack that frees a slot wakes it');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '1',
   'and the next dequeue gets that slot');

# a clean restart keeps it all too
$node->restart;
wait_for_counters($node, 'postgres', 'k') or die 'counters never rebuilt after the restart';
is($node->safe_psql('postgres', $key_mismatch), '0', 'after a clean restart too');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('k', 10, 3600)}), '0',
   'and the limit still holds');

# an ordered key across a crash: its job in flight still holds it after
# the recount (the policy is loaded again), and when that lease is
# reclaimed the same job goes again, before the key's next one
create_queue($node, 'postgres', 'o');
is($node->safe_psql('postgres', q{
    SELECT 1 FROM jq.jq_set_key_policy('o', 'conv', ordered => true);
    SELECT cardinality(jq.jq_enqueue_batch('o', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[],
                                           keys => array_fill('conv'::text, ARRAY[3])));
    SELECT string_agg(payload->>'n', ',') FROM jq.jq_dequeue('o', 10, 3600)}), "1\n3\n1",
   'an ordered key hands out its first job');
$node->stop('immediate');
$node->start;
wait_for_counters($node, 'postgres', 'o') or die 'counters never rebuilt after the crash';
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('o', 10, 3600)}), '0',
   'after a crash its lease still holds the ordered key');
$node->safe_psql('postgres', q{
    UPDATE jq.job SET lease_expires_at = clock_timestamp() - interval '1 second'
     WHERE queue_id = jq.queue_id('o') AND state = 'l'});
$node->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM jq.job WHERE queue_id = jq.queue_id('o') AND state = 'l'})
  or die 'the expired lease was not reclaimed';
is($node->safe_psql('postgres', q{
    SELECT payload->>'n' || ' attempt ' || attempt FROM jq.jq_dequeue('o', 10, 3600)}),
   '1 attempt 2', 'reclaimed, the same job goes again, before the next');

$node->stop;

# shared memory for keys is bounded by pgjq.max_keys: a new key that finds
# no room fails its enqueue (53400) and nothing else; keys that hold
# nothing are forgotten to make room; limits stay right
my $small = new_node('keys_small', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '200ms',
    'pgjq.max_keys' => '100' });
create_queue($small, 'postgres', 's', key_max_in_flight => 1);
wait_for_counters($small, 'postgres', 's') or die 'counters never became valid';
is($small->safe_psql('postgres', q{
    SELECT count(*) FROM generate_series(1, 100) g, jq.jq_enqueue('s', '{}', key => 'k' || g)}),
   '100', 'jobs of 100 keys fit in pgjq.max_keys = 100');
my ($rc, $stdout, $stderr) = $small->psql('postgres', q{
    \set VERBOSITY verbose
    SELECT jq.jq_enqueue('s', '{}', key => 'k101')});
like($stderr, qr/53400: too many job keys in shared memory for key "k101"/,
     'the 101st key is refused, with 53400');
is($small->safe_psql('postgres', q{SELECT jq.jq_enqueue('s', '{}', key => 'k7') > 0}), 't',
   'a known key still enqueues');
is($small->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('s', 200)}), '100',
   'one job of each key in flight: their limit of 1 holds');
$small->safe_psql('postgres', q{
    SELECT count(*) FILTER (WHERE jq.jq_ack(id, lease_token, NULL)) FROM jq.job WHERE state = 'l'});
# the second job of k7 keeps k7; the 99 other keys hold nothing now
is($small->safe_psql('postgres', q{
    SELECT count(*) FROM generate_series(101, 150) g, jq.jq_enqueue('s', '{}', key => 'k' || g)}),
   '50', 'keys that hold nothing are forgotten to make room for new ones');
is($small->safe_psql('postgres', q{
    SELECT string_agg(key, ',' ORDER BY key) FROM jq.jq_dequeue('s', 200) WHERE key IN ('k7', 'k101')}),
   'k101,k7', 'the new keys and the kept one are served');
is($small->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('s', 200)}), '0',
   'and their limits hold');
$small->stop;
done_testing();
