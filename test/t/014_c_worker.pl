# The C example worker (docs/workers/c) against a cluster that preloads
# pgjq, as 010_worker_examples.pl tests the Python, Node and shell ones:
#   - it builds with its Makefile (-Wall -Wextra -Werror) into a temporary
#     directory, against libpq and clients/c/jqclient.c;
#   - it runs as a login role that has only jq_worker;
#   - a queue of 36 jobs: 28 pieces of ad copy (mixed case, punctuation,
#     non-ASCII letters, emoji, the length boundaries, 2,000 characters)
#     and 8 malformed payloads, with a 2 s lease, batches of 3 and 700 ms of
#     simulated work per job, so every lease must be extended: every valid
#     job succeeded at its first attempt with the score and reasons computed
#     here in Perl from the rules in docs/workers/README.md and "worker":
#     "c"; every malformed job is a dead letter after one attempt with the
#     error 'payload has no "copy" string'; jq.job is empty;
#   - long jobs, configured through the JQ_* environment variables: 3 s of
#     work on a 1 s lease, the second job of the batch held for 6 s, both
#     succeed at their first attempt;
#   - the wakeup: with --poll-seconds 60 a job enqueued to the idle worker
#     starts within a second; SIGTERM then stops it at once, exit 0;
#   - SIGINT in the middle of a batch: the job in hand is finished, the
#     rest given back ('worker shutting down', ready at once), exit 0;
#   - jq_cancel of the job in hand: jq_extend says so, the job is dropped
#     and counted as a lease lost;
#   - a failing jq.jq_ack (EXECUTE revoked) is a retryable failure with the
#     server's error text, up to the queue's max_attempts;
#   - bad options exit 2, a failed connection exits 1.
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

my $cdir = File::Spec->rel2abs("$FindBin::RealBin/../../docs/workers/c");

# --- the build ------------------------------------------------------------------

my $bindir = PostgreSQL::Test::Utils::tempdir('c_worker');
my $worker = "$bindir/worker";
{
	# a clean make: not the MAKEFLAGS (variables, -s, jobserver) of the make
	# that runs this test
	local %ENV = %ENV;
	delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES)};
	my $pg_config = $ENV{PG_CONFIG} || 'pg_config';    # PGXS puts bindir first in PATH
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[ 'make', '-C', $cdir, "BUILDDIR=$bindir", "PG_CONFIG=$pg_config" ],
		'<', \undef, '>', \$out, '2>', \$err);
	note "make:\n$out$err";
	ok($ok, 'the C worker builds with -Wall -Wextra -Werror') or die "build failed:\n$err\n";
	ok(-x $worker, "and the binary is $worker");
	unlike("$out$err", qr/warning/i, 'without a warning');
}

# the scoring rules (expected_score), the copies and the malformed payloads
# of 010_worker_examples.pl: test/t/ScoringRules.pm

# --- the jobs: those of 010_worker_examples.pl, and some for a byte-wise reader ---

my $e_acute = "\x{e9}";
my $rocket = "\x{1f680}";
my @copies = (
	ad_copies(),
	# 2,000 characters, 2,996 bytes: too long, still a call to action
	'Buy ' . ("${e_acute}t${e_acute} " x 498) . 'done',
	# non-ASCII letters that lowercase to ASCII elsewhere (U+0130, the
	# Kelvin sign U+212A) are separators here: "stanbul", "ilo"
	"\x{130}stanbul: one \x{212a}ilo of tea, SHOP now",
	"WINNER winner WiNnEr: ${rocket}CURE${rocket} ${e_acute}order",    # 'order' after é
	' ' x 25,
);
my @malformed = (malformed_payloads(), '{"copy": true}', '{}');
is(scalar @copies, 28, '28 valid copies');
is(length($copies[24]), 2000, 'a copy of 2,000 characters');
is((expected_score($copies[26]))[1],
	'good_length,banned:cure,banned:winner,call_to_action:order',
	'banned words count once, non-ASCII characters separate words');

# the payloads of one queue, valid and malformed interleaved:
# [payload JSON, copy or undef] pairs
my @jobs = job_mix(36, 4, \@copies, \@malformed);

# --- the cluster -------------------------------------------------------------------------

my $node = new_node('c_worker', extension => 1,
	init => { extra => [ '--encoding=UTF8', '--locale=C' ] },
	conf => { 'pgjq.database' => 'postgres' });
$node->safe_psql('postgres', 'CREATE ROLE scoring_worker LOGIN IN ROLE jq_worker');
create_queue($node, 'postgres', 'ads_c', lease_seconds => 2, max_attempts => 3);
create_queue($node, 'postgres', 'ads_c_long', lease_seconds => 1, max_attempts => 3);
create_queue($node, 'postgres', 'ads_c_wake', lease_seconds => 30);
create_queue($node, 'postgres', 'ads_c_stop', lease_seconds => 30);
create_queue($node, 'postgres', 'ads_c_cancel', lease_seconds => 2);
create_queue($node, 'postgres', 'ads_c_retry', lease_seconds => 30, max_attempts => 2,
	backoff_base => '100 ms', backoff_cap => '100 ms');
ok(defined wait_for_worker($node, 'postgres'), 'the pgjq worker runs');

# the worker connects with these (and PGUSER, set to the worker's role in
# start_worker only: safe_psql here runs as the superuser)
client_env($node, 'postgres');

# start_worker(ARGS...): the worker as a subprocess; returns
# [harness, \stdout, \stderr]
sub start_worker
{
	my @args = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGUSER} = 'scoring_worker';
	note "starting: $worker @args";
	my $h = IPC::Run::start([ $worker, @args ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	return [ $h, \$out, \$err ];
}

# finish_worker(RUN, NAME): waits for the worker to exit; returns its exit code
sub finish_worker
{
	my ($run, $name) = @_;
	my ($h, $out, $err) = @$run;
	my $finished = eval { $h->finish; 1 };
	ok($finished, "$name: the worker finished") or $h->kill_kill;
	note "--- $name: the worker's log:\n$$err";
	return ($h->full_results)[0];
}

# enqueue(QUEUE, PAYLOADS...): returns the job ids, in order
sub enqueue { return enqueue_jobs($node, 'postgres', @_); }

# results(IDS...): job id => [state, attempts, score, reasons, worker, last_error]
sub results
{
	my $ids = join(',', @_);
	my %rows;
	for my $row (split /\n/, $node->safe_psql('postgres', qq{
		SELECT r.job_id, r.state, r.attempts, r.result->>'score',
		       (SELECT string_agg(x, ',') FROM jsonb_array_elements_text(r.result->'reasons') x),
		       r.result->>'worker', r.last_error
		  FROM unnest('{$ids}'::bigint[]) i(id)
		 CROSS JOIN LATERAL jq.jq_result(i.id) r}))
	{
		my @f = split /\|/, $row, -1;
		$rows{ shift @f } = \@f;
	}
	return \%rows;
}

# all_leased_query(IDS...): a query that is true once all the jobs are leased
sub all_leased_query
{
	my $ids = join(',', @_);
	return sprintf(q{SELECT count(*) = %d FROM unnest('{%s}'::bigint[]) i(id)
		CROSS JOIN LATERAL jq.jq_result(i.id) r WHERE r.state = 'leased'}, scalar @_, $ids);
}

# --- the main run: 36 jobs, every lease extended ---------------------------------

my @ids = enqueue('ads_c', map { $_->[0] } @jobs);
is(scalar @ids, 36, '36 jobs enqueued into ads_c');
my %job_of;
@job_of{@ids} = (0 .. $#ids);

my $t0 = time;
my $run = start_worker('ads_c', '--batch', 3, '--lease-seconds=2', '--work-ms', 700,
	'--exit-when-idle', 2, '--poll-seconds', 60);
is(finish_worker($run, 'ads_c'), 0, 'ads_c: the worker exited 0');
note sprintf('ads_c: 36 jobs in %.1f s', time - $t0);
my $log = ${ $run->[2] };
like($log, qr/^\[c\] listening on jq_ads_c \(batch 3, lease 2 s\)$/m, 'it listens on jq_ads_c');
like($log, qr/^\[c\] idle for \d+\.\d s, exiting$/m, 'it exited because it was idle');
like($log, qr/^\[c\] done: 28 acked, 8 failed, \d+ lease extensions, 0 leases lost$/m,
	'28 acked, 8 failed, no lease lost');
{
	my %extended = map { $_ => 1 } ($log =~ /^\[c\] job (\d+): lease extended to /mg);
	my @valid_ids = grep { defined $jobs[ $job_of{$_} ][1] } @ids;
	is(scalar(grep { !$extended{$_} } @valid_ids), 0,
		'every valid job\'s lease was extended at least once');
}

{
	my $rows = results(@ids);
	my %dead;
	for my $row (split /\n/, $node->safe_psql('postgres', qq{
		SELECT job_id, attempts, last_error FROM jq.dead_letter WHERE queue = 'ads_c'}))
	{
		my ($id, @f) = split /\|/, $row, -1;
		$dead{$id} = join('|', @f);
	}
	is(scalar keys %$rows, 36, 'ads_c: 36 jobs known');
	my (@bad_valid, @bad_dead);
	for my $id (@ids)
	{
		my $copy = $jobs[ $job_of{$id} ][1];
		my ($state, $attempts, $score, $reasons, $wname, $error) =
		  map { $_ // '' } @{ $rows->{$id} || [] };
		if (defined $copy)
		{
			my ($want_score, $want_reasons) = expected_score($copy);
			my $got = "$state|$attempts|$score|$reasons|$wname";
			my $want = "succeeded|1|$want_score|$want_reasons|c";
			push @bad_valid, "job $id: got $got, want $want" if $got ne $want;
		}
		else
		{
			my $got = "$state|$attempts|$error|" . ($dead{$id} // '');
			my $want = 'dead|1|payload has no "copy" string|1|payload has no "copy" string';
			push @bad_dead, "job $id: got $got, want $want" if $got ne $want;
		}
	}
	is_deeply(\@bad_valid, [],
		'ads_c: all 28 valid jobs succeeded at the first attempt with the expected score, reasons and worker "c"');
	is_deeply(\@bad_dead, [],
		'ads_c: all 8 malformed jobs are dead letters after 1 attempt, with the error \'payload has no "copy" string\'');
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM jq.job'), '0',
	'nothing is left in jq.job');

# --- long jobs, options from the environment ------------------------------------

{
	my @long_copies = ('Order the long report today', 'Book the slow tour');
	my @long = enqueue('ads_c_long', map { qq({"copy": "$_"}) } @long_copies);
	local $ENV{JQ_QUEUE} = 'ads_c_long';
	local $ENV{JQ_BATCH} = 2;
	local $ENV{JQ_LEASE_SECONDS} = 1;
	local $ENV{JQ_WORK_MS} = 3000;
	local $ENV{JQ_POLL_SECONDS} = '0.2';
	local $ENV{JQ_EXIT_WHEN_IDLE} = '1.5';
	my $run = start_worker();
	is(finish_worker($run, 'ads_c_long'), 0, 'ads_c_long: the worker exited 0');
	my $log = ${ $run->[2] };
	like($log, qr/^\[c\] listening on jq_ads_c_long \(batch 2, lease 1 s\)$/m,
		'JQ_QUEUE, JQ_BATCH and JQ_LEASE_SECONDS are read');
	like($log, qr/^\[c\] done: 2 acked, 0 failed, \d+ lease extensions, 0 leases lost$/m,
		'both long jobs acked, no lease lost');
	for my $id (@long)
	{
		my $n = () = $log =~ /^\[c\] job $id: lease extended to /mg;
		cmp_ok($n, '>=', 5, "job $id: its 1 s lease was extended $n times");
	}
	# held from the dequeue to the ack: the first job its 3 s of work, the
	# second the first's 3 s and its own
	my $rows = results(@long);
	for my $i (0, 1)
	{
		my $id = $long[$i];
		my $held = $node->safe_psql('postgres',
			"SELECT extract(epoch FROM finished_at - started_at) FROM jq.jq_result($id)");
		note "job $id was held $held s";
		cmp_ok($held, '>', 3 * ($i + 1) - 0.1, "job $id was held over @{[ 3 * ($i + 1) ]} s on a 1 s lease");
		is(join('|', @{ $rows->{$id} }[ 0 .. 4 ]),
			join('|', 'succeeded', 1, expected_score($long_copies[$i]), 'c'),
			"job $id succeeded at its first attempt with its score");
	}
}

# --- the wakeup, and SIGTERM while idle ------------------------------------------

{
	my $run = start_worker('ads_c_wake', '--poll-seconds', 60);
	ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE application_name = 'pgjq-worker-c' AND state = 'idle'
		   AND query LIKE '%jq_dequeue%'}),
		'the worker has dequeued once and waits');
	usleep(300_000);
	my ($id) = enqueue('ads_c_wake', '{"copy": "Shop the winter sale today"}');
	ok($node->poll_query_until('postgres',
			"SELECT state = 'succeeded' FROM jq.jq_result($id)"),
		'the job enqueued to the waiting worker succeeded');
	my $pickup = $node->safe_psql('postgres',
		"SELECT extract(epoch FROM started_at - enqueued_at) FROM jq.jq_result($id)");
	note "ads_c_wake: the job started $pickup s after the enqueue";
	cmp_ok($pickup, '<', 1,
		'it started within a second, through the wakeup (the worker polls every 60 s)');
	my $t0 = time;
	$run->[0]->signal('TERM');
	is(finish_worker($run, 'ads_c_wake'), 0, 'SIGTERM while idle: exit 0');
	cmp_ok(time - $t0, '<', 5, 'within 5 s');
	like(${ $run->[2] }, qr/^\[c\] got SIGTERM, stopping after the current job$/m,
		'it said why');
	like(${ $run->[2] }, qr/^\[c\] done: 1 acked, 0 failed, 0 lease extensions, 0 leases lost$/m,
		'and how it went');
}

# --- SIGINT in the middle of a batch ------------------------------------------------

{
	my @stop = enqueue('ads_c_stop', map { qq({"copy": "Order number $_ today, please"}) } 1 .. 4);
	my $run = start_worker('ads_c_stop', '--batch', 4, '--work-ms', 3000,
		'--poll-seconds', 60);
	ok($node->poll_query_until('postgres', all_leased_query(@stop)),
		'the worker leased the 4 jobs');
	$run->[0]->signal('INT');
	is(finish_worker($run, 'ads_c_stop'), 0, 'SIGINT in a batch: exit 0');
	like(${ $run->[2] }, qr/^\[c\] done: 1 acked, 3 failed, \d+ lease extensions, 0 leases lost$/m,
		'it finished the job in hand and gave back the other 3');
	my $rows = results(@stop);
	is(join(',', map { join('|', @{ $rows->{$_} }[ 0, 1, 5 ]) } @stop),
		'succeeded|1|,' . join(',', ('ready|1|worker shutting down') x 3),
		'the job in hand succeeded; the others are ready again, after 1 attempt, "worker shutting down"');
}

# --- the job in hand is cancelled ---------------------------------------------------

{
	my ($id) = enqueue('ads_c_cancel', '{"copy": "Buy it before it is gone"}');
	my $run = start_worker('ads_c_cancel', '--batch', 1, '--lease-seconds', 2,
		'--work-ms', 2500, '--poll-seconds', '0.2', '--exit-when-idle', 1);
	ok($node->poll_query_until('postgres', all_leased_query($id)), 'the job is leased');
	is($node->safe_psql('postgres', "SELECT jq.jq_cancel($id)"), 't', 'jq_cancel of the leased job');
	is(finish_worker($run, 'ads_c_cancel'), 0, 'the worker exited 0');
	like(${ $run->[2] }, qr/^\[c\] job $id: lease lost or job cancelled, dropping it$/m,
		'jq_extend told it the job was cancelled');
	like(${ $run->[2] }, qr/^\[c\] done: 0 acked, 0 failed, \d+ lease extensions, 1 leases lost$/m,
		'it dropped the job without an ack');
	ok($node->poll_query_until('postgres',
			"SELECT state = 'cancelled' FROM jq.jq_result($id)"),
		'the job is cancelled once its lease runs out');
}

# --- a failing jq_ack is a retryable failure --------------------------------------

{
	$node->safe_psql('postgres',
		'REVOKE EXECUTE ON FUNCTION jq.jq_ack(bigint, bigint, jsonb, jsonb) FROM jq_worker');
	my $copy = 'Book a demo of the retry path';
	my @retry = enqueue('ads_c_retry', qq({"copy": "$copy"}), '{"copy": 42}');
	my $run = start_worker('ads_c_retry', '--batch', 2, '--poll-seconds', '0.2',
		'--exit-when-idle', 1);
	is(finish_worker($run, 'ads_c_retry'), 0, 'the worker exited 0');
	like(${ $run->[2] },
		qr/^\[c\] job $retry[0] failed \(worker\.c: permission denied for function jq_ack\): now (scheduled|ready)$/m,
		'the refused ack made a retryable failure');
	like(${ $run->[2] }, qr/^\[c\] done: 0 acked, 3 failed, 0 lease extensions, 0 leases lost$/m,
		'two attempts at the valid job, one at the malformed one');
	my $rows = results(@retry);
	is(join(',', map { join('|', @{ $rows->{$_} }[ 0, 1, 5 ]) } @retry),
		'dead|2|worker.c: permission denied for function jq_ack,'
		  . 'dead|1|payload has no "copy" string',
		'the valid job is dead after max_attempts (2), the malformed one after 1');

	# with the grant back, a redriven job goes through
	$node->safe_psql('postgres',
		'GRANT EXECUTE ON FUNCTION jq.jq_ack(bigint, bigint, jsonb, jsonb) TO jq_worker');
	is($node->safe_psql('postgres', "SELECT jq.jq_redrive('ads_c_retry', '{$retry[0]}')"),
		'1', 'jq_redrive of the valid job');
	$run = start_worker('ads_c_retry', '--poll-seconds', '0.2', '--exit-when-idle', 1);
	is(finish_worker($run, 'ads_c_retry'), 0, 'the worker exited 0');
	$rows = results($retry[0]);
	is(join('|', @{ $rows->{ $retry[0] } }[ 0, 2, 3, 4 ]),
		join('|', 'succeeded', expected_score($copy), 'c'),
		'the redriven job succeeded with its score');
}

# --- bad options, no server -----------------------------------------------------------

for my $case (
	[ [], 'no queue' ],
	[ ['Bad-Name'], 'a queue name jq_create_queue would refuse' ],
	[ [ 'ads_c', '--batch', 0 ], '--batch 0' ],
	[ [ 'ads_c', '--batch', '3x' ], '--batch 3x' ],
	[ [ 'ads_c', '--lease-seconds', 86401 ], '--lease-seconds over a day' ],
	[ [ 'ads_c', '--poll-seconds', '-1' ], 'negative --poll-seconds' ],
	[ [ 'ads_c', '--batch' ], '--batch without a value' ],
	[ [ 'ads_c', '--frobnicate' ], 'an unknown option' ])
{
	my ($args, $what) = @$case;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $worker, @$args ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(30));
	is($? >> 8, 2, "$what: exit 2");
	like($err, qr/^usage: worker QUEUE/m, "$what: usage shown");
}
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $worker, '--help' ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(30));
	is($? >> 8, 0, '--help: exit 0');

	local $ENV{PGHOST} = "$bindir/no-such-socket-dir";
	IPC::Run::run([ $worker, 'ads_c' ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(30));
	is($? >> 8, 1, 'no server: exit 1');
	like($err, qr/^\[c\] error: connection failed: /m, 'no server: it says so');
}

$node->stop;
done_testing();
