# The prometheus-postgres-exporter query file (docs/prometheus) exposes
# pgjq's depth, age, rate and dead-letter metrics: start the real exporter
# against a cluster and read its /metrics.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use File::Basename qw(dirname);
use Cwd ();

my $exporter = '/usr/bin/prometheus-postgres-exporter';
ok(-x $exporter, 'prometheus-postgres-exporter is installed') or BAIL_OUT('no exporter');
my $queries = dirname(__FILE__) . '/../../docs/prometheus/pgjq_queries.yaml';
$queries = Cwd::abs_path($queries);

my $node = new_node('prom', extension => 1,
    conf => { 'pgjq.database' => 'postgres', 'pgjq.stats_interval' => '1s' });
create_queue($node, 'postgres', 'scoring', max_attempts => 1, alert_depth_warning => 5);
enqueue_jobs($node, 'postgres', 'scoring', ('{}') x 7);
$node->safe_psql('postgres', q{
    CREATE ROLE prom_exporter LOGIN IN ROLE jq_reader, pg_monitor;
    SELECT jq.jq_enqueue('scoring', '{"urgent": true}', priority => 10);
    SELECT jq.jq_ack(job_id, lease_token) FROM jq.jq_dequeue('scoring', 1);
    SELECT jq.jq_fail(job_id, lease_token, 'bad', permanent => true) FROM jq.jq_dequeue('scoring', 1);
});
wait_for_counters($node, 'postgres', 'scoring')
  or die 'counters never valid';
$node->poll_query_until('postgres',
    q{SELECT count(*) = 1 FROM jq.alert WHERE queue = 'scoring' AND cleared_at IS NULL})
  or die 'alert never raised';

# a free port on loopback
my $sock = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0);
my $port = $sock->sockport;
close $sock;

my $dsn = sprintf('host=%s port=%d user=prom_exporter dbname=postgres sslmode=disable',
                  $node->host, $node->port);
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
    [ $exporter, "--extend.query-path=$queries", "--web.listen-address=127.0.0.1:$port",
      '--disable-default-metrics', '--disable-settings-metrics' ],
    '>', \$out, '2>', \$err,
    init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });

my $metrics = '';
my $http = HTTP::Tiny->new(timeout => 5);
for (1 .. 100)
{
    my $res = $http->get("http://127.0.0.1:$port/metrics");
    if ($res->{success} && $res->{content} =~ /pgjq_queue_ready/)
    {
        $metrics = $res->{content};
        last;
    }
    select(undef, undef, undef, 0.2);
}
$h->kill_kill;
note "exporter stderr: $err" if $metrics eq '';

sub metric
{
    my ($name, $labels) = @_;
    for my $line (split /\n/, $metrics)
    {
        next unless $line =~ /^\Q$name\E\{([^}]*)\} (\S+)$/;
        my ($l, $v) = ($1, $2);
        next if grep { $l !~ /\Q$_\E/ } @$labels;
        return $v;
    }
    return undef;
}

is(metric('pgjq_queue_ready', ['queue="scoring"']), '6', 'ready depth');
is(metric('pgjq_queue_dead', ['queue="scoring"']), '1', 'dead letters');
is(metric('pgjq_queue_in_flight', ['queue="scoring"']), '0', 'in flight');
is(metric('pgjq_queue_enqueued_total', ['queue="scoring"']), '8', 'enqueued total');
is(metric('pgjq_queue_succeeded_total', ['queue="scoring"']), '1', 'succeeded total');
is(metric('pgjq_queue_dead_lettered_total', ['queue="scoring"']), '1', 'dead-lettered total');
ok(defined metric('pgjq_queue_oldest_ready_age_seconds', ['queue="scoring"'])
     && metric('pgjq_queue_oldest_ready_age_seconds', ['queue="scoring"']) > 0,
   'age of the oldest ready job');
is(metric('pgjq_queue_counters_valid', ['queue="scoring"']), '1', 'counters valid');
is(metric('pgjq_lane_ready', ['queue="scoring"', 'priority="0"']), '6', 'standard lane depth');
is(metric('pgjq_lane_ready', ['queue="scoring"', 'priority="10"']), '0', 'urgent lane drained');
is(metric('pgjq_alert_open', ['queue="scoring"', 'kind="depth"', 'level="warning"']), '1',
   'the depth alert is open');
is(metric('pgjq_alert_open', ['queue="scoring"', 'kind="depth"', 'level="critical"']), '0',
   'no critical alert');
like($metrics, qr/# TYPE pgjq_queue_succeeded_total counter/, 'totals are counters');

$node->stop;
done_testing();
