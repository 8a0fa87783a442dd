# The launch-day demo (docs/demo/launch_day.py, the program behind make
# demo) through the PL/Proxy router: three shard clusters, each with pgjq
# and its background worker (1 s stats, 100 ms naptime), and a router
# cluster without pgjq, set up with proxy/pgjq_proxy; then
# launch_day.py --router against the router, on a day a tenth the size
# (--scale 0.1: 1,800 requests, each inference ten times as long) replayed
# at x360, so that it runs in about 45 s.  Checked:
#   - the demo exits 0, says it ran through the router over 3 shards, and
#     its own checks pass: jobs lost 0, none acked twice, attempts equal
#     the deliveries its workers saw, every result the scoring rules',
#     acks accepted = succeeded and none refused, the resubmissions
#     absorbed by their idempotency keys, the dead jobs exactly the
#     malformed ones, scoring_fifo none lost or acked twice, no shard above
#     the endpoint's 8 in flight, the crashed worker's jobs redone after
#     'lease expired' and its token fenced off, no awaiting client back
#     early without its result, no CHECK FAILED and no error; alerts and
#     stats history are said to be per shard;
#   - on the shards themselves: every shard did part of the work, every
#     result's id names its shard, nothing is left in jq.job, the shards
#     hold exactly the jobs the demo counted (results and dead letters),
#     and each queue's client team (job key) is on exactly one shard.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use File::Spec;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $top = File::Spec->rel2abs("$FindBin::RealBin/../..");
my $n = 3;
my $endpoint = 8;    # the demo's max_in_flight, on each shard
my @teams = qw(northwind lumen kestrel acme bluefin corvid dovetail ember fjord
  granite harbor ironwood juniper marlow);

my $python = '/usr/bin/python3';
ok(-x $python, "Debian's python3 is at $python") or die "no $python\n";
is(system($python, '-c', 'import psycopg'), 0,
	'python3-psycopg (psycopg 3) is installed') or die "no psycopg for $python\n";

# --- three shards and a router --------------------------------------------------

my @shards = map {
	new_node("shard$_", extension => 1, conf => {
		'pgjq.database' => 'postgres',
		'pgjq.stats_interval' => '1s',
		'pgjq.naptime' => '100ms' })
} 0 .. $n - 1;
my $router = PostgreSQL::Test::Cluster->new('router');
$router->init;
$router->start;

my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ "$top/proxy/pgjq_proxy", $router->connstr('postgres'),
		map { 'host=' . $_->host . ' port=' . $_->port . ' dbname=postgres' } @shards ],
	'>', \$out, '2>', \$err);
ok($ok, 'pgjq_proxy sets up the router over three shards') or diag($err);
like($out, qr/router over 3 shards ready/, 'pgjq_proxy says the router reaches every shard')
  or die "no router\n";

# --- the demo through the router --------------------------------------------------

client_env($router, 'postgres');
$ENV{PGUSER} = getpwuid($>);
$ENV{PYTHONIOENCODING} = 'utf-8';
my $chart = PostgreSQL::Test::Utils::tempdir() . '/launch_day.png';
my @demo = ($python, "$top/docs/demo/launch_day.py", '--router',
	'--scale' => '0.1', '--factor' => '360', '--chart' => $chart);
note "running: @demo";
($out, $err) = ('', '');
my $t0 = time;
$ok = eval {
	IPC::Run::run(\@demo, '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(150));
};
my $took = time - $t0;
note "the demo ran for " . sprintf('%.0f', $took) . " s";
note $out;
ok($ok, 'launch_day.py --router exits 0') or diag("exit $?, $@\n$err");
is($err, '', 'and writes nothing to stderr');

# report_number(LABEL): the figure the report prints after LABEL (commas dropped)
sub report_number
{
	my ($label) = @_;
	my ($v) = $out =~ /^\s*\Q$label\E\s+([\d,]+)\s*$/m;
	$v =~ s/,//g if defined $v;
	return $v;
}

like($out, qr/^  through a pgjq_proxy router over 3 shards \(jq\.worker_status: each shard's background worker ok\)/m,
	'the demo runs through the router over 3 shards, every shard\'s worker ok');
like($out, qr/^launch-day replay OK \(\d+ s\)$/m, 'the demo says it is OK');
unlike($out, qr/CHECK FAILED|\*\* error|NOT FOUND|did not drain|did not happen/,
	'no check of the demo failed');
like($out, qr/^  jobs lost: 0$/m, 'jobs lost: 0');

my $ids = report_number('job ids returned to producers');
my $succeeded = report_number('succeeded');
my $dead = report_number('dead (failed permanently)');
cmp_ok($ids // 0, '>=', 1700, "the producers got back the ids of a tenth of the day's jobs ($ids)");
is($succeeded + $dead, $ids, 'every job id succeeded or is dead');
is(report_number('jobs acked more than once'), '0', 'no job acked twice');
is(report_number('attempts != deliveries seen'), '0', 'every job\'s attempts are the deliveries its workers saw');
is(report_number('results not matching the rules'), '0', 'every result is the scoring rules\'');
my $acks = quotemeta(commify($succeeded));
like($out, qr{^  acks accepted / refused\s+$acks / 0$}m, 'acks accepted = jobs succeeded, none refused');

my ($absorbed, $resubmits) = $out =~ /duplicates absorbed by idempotency keys: (\d+) \((\d+) resubmissions/;
ok(defined $absorbed && $absorbed == $resubmits && $resubmits > 0,
	"each resubmission got its first submission's id back ($absorbed of $resubmits)");
my ($dead_jobs, $malformed) = $out =~
  /dead jobs are exactly the malformed submissions: yes \((\d+) dead, (\d+) malformed\)/;
ok(defined $dead_jobs && $dead_jobs == $malformed && $malformed > 0 && $dead_jobs == $dead,
	"the dead jobs are exactly the malformed ones ($dead_jobs)");
my ($fifo_jobs, $fifo_ok, $fifo_dead) =
  $out =~ /^  scoring_fifo: ([\d,]+) jobs, ([\d,]+) succeeded, (\d+) dead, lost 0, acked twice 0$/m;
ok(defined $fifo_jobs, 'scoring_fifo: none lost, none acked twice');
s/,//g for grep { defined } $fifo_jobs, $fifo_ok;
is($fifo_jobs, $ids, 'scoring_fifo has a twin of every job');

my ($on_shard, $fifo_on_shard) =
  $out =~ /in flight on one shard at most (\d+) in scoring and (\d+) in scoring_fifo/;
ok(defined $on_shard && $on_shard > 0 && $on_shard <= $endpoint
	  && $fifo_on_shard > 0 && $fifo_on_shard <= $endpoint,
	"no shard had more than the endpoint's $endpoint in flight (" . ($on_shard // '?') . ', '
	  . ($fifo_on_shard // '?') . ')');

my ($crashed) = $out =~ /worker w5 died mid-inference holding (\d+) leases? of the 4/;
cmp_ok($crashed // 0, '>=', 1, 'worker w5 died holding leases');
my @redone = $out =~ /^    job \d+ \((?:urgent|standard)\): (\w+), attempts (\d+), last error '([^']*)'/mg;
my @bad;
while (my ($state, $attempts, $error) = splice(@redone, 0, 3))
{
	push @bad, "$state/$attempts/$error"
	  unless $attempts >= 2 && ($state eq 'dead' || ($state eq 'succeeded' && $error eq 'lease expired'));
}
is(scalar(() = $out =~ /^    job \d+ \((?:urgent|standard)\): /mg), $crashed // -1,
	'the report shows each job of the dead worker');
is("@bad", '', 'each was reclaimed after its lease expired and redone');
like($out, qr/the dead worker's token, if it came back: jq\.jq_ack\(job \d+\) = False \(fenced off\)/,
	'the dead worker\'s token is fenced off');

my ($awaited, $with_result) = $out =~ /^  awaited (\d+): (\d+) returned with their result/m;
cmp_ok($awaited // 0, '>', 0, "clients awaited the urgent results through the router ($awaited)");
like($out, qr/^  returned early without a result: 0$/m, 'no client came back early without its result');
like($out, qr/^  jq\.stats_history and alerts: per shard .*not available through the router$/m,
	'stats history and alerts: said to be per shard');

# --- the shards themselves ---------------------------------------------------------

my ($results, $letters) = (0, 0);
my %home;    # "queue key" -> shards that hold its jobs
for my $i (0 .. $n - 1)
{
	my $s = $shards[$i];
	my ($done, $fifo_done, $stray) = split /\|/, $s->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE q.name = 'scoring'),
		       count(*) FILTER (WHERE q.name = 'scoring_fifo'),
		       count(*) FILTER (WHERE r.job_id >> 44 <> $i)
		  FROM jq.job_result r JOIN jq.queue q USING (queue_id)});
	cmp_ok($done, '>', 0, "shard $i did part of scoring's work ($done results)");
	cmp_ok($fifo_done, '>', 0, "shard $i did part of scoring_fifo's work ($fifo_done results)");
	is($stray, '0', "every result on shard $i has an id of its range");
	is($s->safe_psql('postgres', 'SELECT count(*) FROM jq.job'), '0', "shard $i has no job left");
	$results += $done;
	$letters += $s->safe_psql('postgres', q{SELECT count(*) FROM jq.dead_letter WHERE queue = 'scoring'});
	for my $qk (split /\n/, $s->safe_psql('postgres', q{
			SELECT DISTINCT q.name || ' ' || coalesce(r.key, '(none)')
			  FROM jq.job_result r JOIN jq.queue q USING (queue_id)
			UNION
			SELECT DISTINCT queue || ' ' || coalesce(key, '(none)') FROM jq.dead_letter}))
	{
		push @{ $home{$qk} }, $i;
	}
}
is($results + $letters, $ids, "the shards hold the demo's $ids jobs of scoring, results and dead letters");
is($letters, $dead, "and its $dead dead letters");
is_deeply([ sort keys %home ],
	[ sort map { ("scoring $_", "scoring_fifo $_") } @teams ],
	'the jobs of both queues have the 14 client teams as keys');
is(join(', ', map { "$_ on shards @{ $home{$_} }" } grep { @{ $home{$_} } != 1 } sort keys %home), '',
	'each queue\'s team is on exactly one shard');

$_->stop for @shards, $router;
done_testing();

sub commify
{
	my ($v) = @_;
	1 while defined $v && $v =~ s/^(\d+)(\d{3})/$1,$2/;
	return $v // '';
}
