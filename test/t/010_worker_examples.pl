# The example workers of docs/workers (Python, Node.js, bash + psql) against
# a cluster that preloads pgjq:
#   - each gets its own queue of 30 jobs: 24 pieces of ad copy (mixed case,
#     punctuation, non-ASCII letters, an emoji, lengths at the boundaries of
#     the rules) and 6 malformed payloads (no "copy" string);
#   - the three run at once, with a 2 s lease, batches of 3 and 1 s of
#     simulated work per job, so every job's lease must be extended (the
#     batch holds 3 s of work) and jq_extend is exercised;
#   - every valid job succeeded on its first attempt with the score and
#     reasons computed here in Perl from the rules in docs/workers/README.md,
#     and "worker": "<lang>"; every malformed job is a dead letter after one
#     attempt with the error 'payload has no "copy" string'; jq.job is empty;
#   - the Python and Node workers pick the jobs up through the jq_<queue>
#     wakeup (they would otherwise poll only at their idle deadline);
#   - each worker exits 0 after --exit-when-idle 2, and on SIGTERM.
# A missing runtime (python3-psycopg, node, docs/workers/node/node_modules)
# fails the test: make test installs them.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;
use ScoringRules;
use IPC::Run;
use File::Spec;
use Time::HiRes qw(time usleep);

my $dir = File::Spec->rel2abs("$FindBin::RealBin/../../docs/workers");
my $lease = 2;
# a worker extends a lease held for a third of it (667 ms): each job works
# well past that, so that a check always falls between (700 ms left 33 ms,
# and under load the shell worker's first job of a batch could finish
# between two checks without an extension)
my $work_ms = 1000;
my $batch = 3;

# --- the runtimes ---------------------------------------------------------------

my $python = '/usr/bin/python3';
ok(-x $python, "Debian's python3 is at $python") or die "no $python\n";
is(system($python, '-c', 'import psycopg'), 0,
	'python3-psycopg (psycopg 3) is installed') or die "no psycopg for $python\n";

my ($nodejs) = grep { -x } (map { "$_/node" } split /:/, $ENV{PATH}),
  '/usr/bin/node', '/usr/local/bin/node';
ok(defined $nodejs, 'node is installed') or die "no node in PATH\n";
ok(-f "$dir/node/node_modules/pg/package.json",
	'docs/workers/node has its node_modules (npm ci)')
  or die "run npm ci in $dir/node\n";
my $shell = '/bin/bash';

my %command = (
	python => [ $python, "$dir/python/worker.py" ],
	node => [ $nodejs, "$dir/node/worker.js" ],
	shell => [ $shell, "$dir/shell/worker.sh" ],);
my @langs = qw(python node shell);

# the scoring rules (expected_score), the copies and the malformed payloads:
# test/t/ScoringRules.pm

# --- the jobs -------------------------------------------------------------------------

my $rocket = "\x{1f680}";
my @copies = ad_copies();
my @malformed = malformed_payloads();
is(scalar @copies, 24, '24 valid copies');
is(length("New ${rocket}${rocket} buy it today"), 19, 'a copy of 19 characters');
is((expected_score("New ${rocket}${rocket} buy it today"))[1],
	'too_short,call_to_action:buy', 'an emoji counts as one character (19)');
is(length($copies[14]), 150, 'a copy of 150 characters');
is((expected_score($copies[14]))[1], 'good_length,call_to_action:shop',
	'150 characters is still a good length');
is((expected_score('Miracle cure for every winner, guaranteed. No need to act.'))[0],
	0, 'the score clamps at 0');

# the payloads of one queue, valid and malformed interleaved; returns
# [payload SQL literal, copy or undef] pairs
my @jobs = job_mix(30, 5, \@copies, \@malformed);

# --- the cluster -------------------------------------------------------------------------

my $node = new_node('workers', extension => 1,
	init => { extra => [ '--encoding=UTF8', '--locale=C' ] },
	conf => { 'pgjq.database' => 'postgres' });
for my $lang (@langs)
{
	create_queue($node, 'postgres', "ads_$lang", lease_seconds => $lease, max_attempts => 3);
}
ok(defined wait_for_worker($node, 'postgres'), 'the pgjq worker runs');

client_env($node, 'postgres');
$ENV{PGUSER} = getpwuid($>);

# start_worker(LANG, OPTIONS...): the worker as a subprocess; returns
# [harness, \stdout, \stderr]
sub start_worker
{
	my ($lang, @opts) = @_;
	my ($out, $err) = ('', '');
	my @cmd = (@{ $command{$lang} }, "ads_$lang", @opts);
	note "starting: @cmd";
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	return [ $h, \$out, \$err ];
}

# wait_listening(LANGS): waits until the workers' sessions have connected
sub wait_listening
{
	my @names = map { "'pgjq-worker-$_'" } @_;
	return $node->poll_query_until('postgres', sprintf(q{
		SELECT count(DISTINCT application_name) = %d FROM pg_stat_activity
		 WHERE application_name IN (%s)}, scalar @names, join(', ', @names)));
}

# --- the run ----------------------------------------------------------------------------

my %run;
for my $lang (@langs)
{
	$run{$lang} = start_worker($lang,
		'--batch' => $batch, '--lease-seconds' => $lease, '--work-ms' => $work_ms,
		'--exit-when-idle' => 2,
		'--poll-seconds' => ($lang eq 'shell' ? '0.5' : 60));
}
ok(wait_listening('python', 'node'), 'the Python and Node workers are connected');

# enqueue; remember each job's id
my %job_of;    # lang => { job id => index into @jobs }
for my $lang (@langs)
{
	my @ids = enqueue_jobs($node, 'postgres', "ads_$lang", map { $_->[0] } @jobs);
	is(scalar @ids, 30, "30 jobs enqueued into ads_$lang");
	@{ $job_of{$lang} }{@ids} = (0 .. $#ids);
}
my $enqueued_at = time;

for my $lang (@langs)
{
	my ($h, $out, $err) = @{ $run{$lang} };
	my $finished = eval { $h->finish; 1 };
	ok($finished, "the $lang worker finished (idle for 2 s)") or $h->kill_kill;
	is(($h->full_results)[0], 0, "the $lang worker exited 0");
	note "--- $lang worker's log:\n$$err";
	like($$err, qr/idle for \d+(\.\d)? s, exiting/, "$lang: it exited because it was idle");
	like($$err, qr/done: 24 acked, 6 failed, \d+ lease extensions, 0 leases lost/,
		"$lang: 24 acked, 6 failed, no lease lost");
	my %extended = map { $_ => 1 } ($$err =~ /^\[$lang\] job (\d+): lease extended/mg);
	my @valid_ids = grep { defined $jobs[ $job_of{$lang}{$_} ][1] } keys %{ $job_of{$lang} };
	is(scalar(grep { !$extended{$_} } @valid_ids), 0,
		"$lang: every valid job's lease was extended at least once");
}
note sprintf('all three workers done %.1f s after the enqueue', time - $enqueued_at);

# --- the results ----------------------------------------------------------------------------

for my $lang (@langs)
{
	my %rows;
	my $ids = join(',', keys %{ $job_of{$lang} });
	for my $row (split /\n/, $node->safe_psql('postgres', qq{
		SELECT r.job_id, r.state, r.attempts, r.result->>'score', r.result->>'worker',
		       (SELECT string_agg(x, ',') FROM jsonb_array_elements_text(r.result->'reasons') x),
		       d.attempts, d.last_error
		  FROM unnest('{$ids}'::bigint[]) i(id)
		 CROSS JOIN LATERAL jq.jq_result(i.id) r
		  LEFT JOIN jq.dead_letter d ON d.job_id = i.id AND d.queue = 'ads_$lang'
		 WHERE r.queue = 'ads_$lang'}))
	{
		my @f = split /\|/, $row, -1;
		$rows{ $f[0] } = \@f;
	}
	is(scalar keys %rows, 30, "ads_$lang: 30 jobs known");
	my (@bad_valid, @bad_dead);
	for my $id (sort { $a <=> $b } keys %{ $job_of{$lang} })
	{
		my $copy = $jobs[ $job_of{$lang}{$id} ][1];
		my $r = $rows{$id} || [];
		my (undef, $state, $attempts, $score, $worker, $reasons, $dl_attempts, $error) = @$r;
		$_ //= '' for ($state, $attempts, $score, $worker, $reasons, $dl_attempts, $error);
		if (defined $copy)
		{
			my ($want_score, $want_reasons) = expected_score($copy);
			my $got = "$state|$attempts|$score|$reasons|$worker";
			my $want = "succeeded|1|$want_score|$want_reasons|$lang";
			push @bad_valid, "job $id: got $got, want $want" if $got ne $want;
		}
		else
		{
			my $got = "$state|$attempts|$dl_attempts|$error";
			my $want = 'dead|1|1|payload has no "copy" string';
			push @bad_dead, "job $id: got $got, want $want" if $got ne $want;
		}
	}
	is_deeply(\@bad_valid, [],
		"ads_$lang: all 24 valid jobs succeeded at the first attempt with the expected score, reasons and worker \"$lang\"");
	is_deeply(\@bad_dead, [],
		"ads_$lang: all 6 malformed jobs are dead letters after 1 attempt, with the error 'payload has no \"copy\" string'");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM jq.job'), '0',
	'nothing is left in jq.job');

# the wakeups: Python and Node wait up to 60 s for a notification (or their
# 2 s idle deadline); the shell worker polls every 0.5 s
for my $lang (@langs)
{
	my $pickup = $node->safe_psql('postgres', qq{
		SELECT extract(epoch FROM min(r.started_at) - max(r.enqueued_at))
		  FROM jq.job_result r JOIN jq.queue q USING (queue_id)
		 WHERE q.name = 'ads_$lang'});
	note sprintf('%s: first job started %.3f s after the enqueue', $lang, $pickup);
	cmp_ok($pickup, '<', 1, "$lang: the first job started within a second of the enqueue");
}

# --- SIGTERM ----------------------------------------------------------------------------

for my $lang (@langs)
{
	$run{$lang} = start_worker($lang, '--poll-seconds' => 60);
}
ok(wait_listening('python', 'node'), 'the Python and Node workers are connected again');
usleep(500_000);    # the shell worker has no session to wait for
for my $lang (@langs)
{
	my ($h, $out, $err) = @{ $run{$lang} };
	my $t0 = time;
	$h->signal('TERM');
	my $finished = eval { $h->finish; 1 };
	ok($finished, "the $lang worker stops on SIGTERM") or $h->kill_kill;
	is(($h->full_results)[0], 0, "and exits 0");
	cmp_ok(time - $t0, '<', 5, 'within 5 s');
	like($$err, qr/done: 0 acked/, "$lang: it said goodbye");
}

$node->stop;
done_testing();
