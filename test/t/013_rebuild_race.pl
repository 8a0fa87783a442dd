# A counter rebuild that waits for a writer counts that writer's jobs: the
# rebuild reads the tables with a snapshot taken after its locks were
# granted, not before.  And CREATE EXTENSION after DROP EXTENSION starts
# from fresh counters.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('rebuild',
    conf => { 'pgjq.database' => 'postgres', 'pgjq.stats_interval' => '1s' });

for my $round (1 .. 2)
{
    # a fresh extension: counters invalid until the worker rebuilds them
    $node->safe_psql('postgres', q{
        DROP EXTENSION IF EXISTS pgjq;
        CREATE EXTENSION pgjq;
    });
    create_queue($node, 'postgres', 'r');
    # a writer holds its transaction open while the worker tries to rebuild
    my $writer = $node->background_psql('postgres');
    $writer->query_safe(q{BEGIN; SELECT jq.jq_enqueue_batch('r', ARRAY['{}', '{}', '{}', '{}', '{}']::jsonb[]);});
    select(undef, undef, undef, 1.5);
    $writer->query_safe('COMMIT');
    $writer->quit;
    wait_for_counters($node, 'postgres', 'r')
      or die 'counters never valid';
    is($node->safe_psql('postgres', q{SELECT ready FROM jq.queue_stats WHERE queue = 'r'}),
       '5', "round $round: the rebuild counted the jobs of the writer it waited for");
    is($node->safe_psql('postgres',
        q{SELECT enqueued_total FROM jq.queue_stats WHERE queue = 'r'}),
       '5', "round $round: no counts left over from the dropped extension");
}
$node->stop;
done_testing();
