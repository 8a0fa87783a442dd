# A counter rebuild that waits for a writer counts that writer's jobs: the
# rebuild reads the tables with a snapshot taken after its locks were
# granted, not before.  And CREATE EXTENSION after DROP EXTENSION starts
# from fresh counters.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('rebuild');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pgjq'
pgjq.database = 'postgres'
pgjq.stats_interval = '1s'
});
$node->start;

for my $round (1 .. 2)
{
    # a fresh extension: counters invalid until the worker rebuilds them
    $node->safe_psql('postgres', q{
        DROP EXTENSION IF EXISTS pgjq;
        CREATE EXTENSION pgjq;
        SELECT 1 FROM jq.jq_create_queue('r');
    });
    # a writer holds its transaction open while the worker tries to rebuild
    my $writer = $node->background_psql('postgres');
    $writer->query_safe(q{BEGIN; SELECT jq.jq_enqueue_batch('r', ARRAY['{}', '{}', '{}', '{}', '{}']::jsonb[]);});
    select(undef, undef, undef, 1.5);
    $writer->query_safe('COMMIT');
    $writer->quit;
    $node->poll_query_until('postgres',
        q{SELECT counters_valid FROM jq.queue_stats WHERE queue = 'r'})
      or die 'counters never valid';
    is($node->safe_psql('postgres', q{SELECT ready FROM jq.queue_stats WHERE queue = 'r'}),
       '5', "round $round: the rebuild counted the jobs of the writer it waited for");
    is($node->safe_psql('postgres',
        q{SELECT enqueued_total FROM jq.queue_stats WHERE queue = 'r'}),
       '5', "round $round: no counts left over from the dropped extension");
}
$node->stop;
done_testing();
