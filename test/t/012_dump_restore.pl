# pg_dump and pg_restore of a database with queued, leased, scheduled,
# retrying, succeeded and dead jobs, keys and batches restore them all
# (the tables are registered with pg_extension_config_dump), and the
# restored queue carries on: leases ack with their tokens, ids continue.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('dump', conf => { 'pgjq.database' => 'dst' });
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', 'CREATE EXTENSION pgjq');
create_queue($node, 'src', 'd', max_attempts => 2, backoff_base => '1 hour',
             backoff_cap => '1 hour', alert_depth_warning => 100);
enqueue_jobs($node, 'src', 'd', map { qq({"n": $_}) } 1 .. 20);
$node->safe_psql('src', q{
    SELECT jq.jq_enqueue('d', '{"later": true}', run_at => now() + interval '1 day',
                      idempotency_key => 'later-1');
    SELECT jq.jq_submit_batch('d', ARRAY['{"b": 1}', '{"b": 2}']::jsonb[], label => 'two');
    SELECT jq.jq_ack(job_id, lease_token, '{"score": 1}') FROM jq.jq_dequeue('d', 3);
    SELECT jq.jq_fail(job_id, lease_token, 'retry later') FROM jq.jq_dequeue('d', 2);
    SELECT jq.jq_fail(job_id, lease_token, 'broken', permanent => true) FROM jq.jq_dequeue('d', 2);
    CREATE TABLE held AS SELECT job_id, lease_token FROM jq.jq_dequeue('d', 4, 3600);
});

# everything pgjq keeps, the job id sequence too, as one comparable text
my $before = snapshot_tables($node, 'src', with_sequence => 1);
like($before, qr/"state": "l"/, 'the source has leased jobs');
like($before, qr/"state": "s"/, 'and scheduled ones');
like($before, qr/^dead /m, 'and dead letters');

my $dump = $node->basedir . '/src.dump';
$node->command_ok(
    [ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok(
    [ 'pg_restore', '-d', $node->connstr('dst'), $dump ], 'pg_restore');

my $after = snapshot_tables($node, 'dst', with_sequence => 1);
is($after, $before, 'every queue, job, result, dead letter, key and batch is restored as it was');

# the restored queue carries on
my $held = $node->safe_psql('src', q{SELECT string_agg(job_id || ',' || lease_token, ' ') FROM held});
my $acked = 0;
for my $pair (split / /, $held)
{
    my ($id, $tok) = split /,/, $pair;
    $acked++ if $node->safe_psql('dst', "SELECT jq.jq_ack($id, $tok)") eq 't';
}
is($acked, 4, 'leases taken before the dump complete with their tokens after the restore');
is($node->safe_psql('dst', q{SELECT jq.jq_enqueue('d', '{}') > max(job_id) FROM jq.job_result}), 't',
   'new job ids continue after the restored ones');
is($node->safe_psql('dst', q{SELECT jq.jq_enqueue('d', '{}', idempotency_key => 'later-1') =
                                  (SELECT job_id FROM jq.idempotency_key WHERE key = 'later-1')}),
   't', 'idempotency keys still hold');
is($node->safe_psql('dst', q{SELECT jq.jq_redrive('d')}), '2', 'dead letters can be redriven');
wait_for_counters($node, 'dst', 'd')
  or die 'counters never valid on the restored database';
is($node->safe_psql('dst', q{SELECT ready + scheduled + in_flight FROM jq.queue_stats WHERE queue = 'd'}),
   $node->safe_psql('dst', 'SELECT count(*) FROM jq.job'), 'the worker counts the restored jobs');

$node->stop;
done_testing();
