# ALTER EXTENSION pgjq UPDATE from the first release (0.1.0) to the current
# version, with jobs in flight: ready, scheduled, leased (its worker acks
# with the token it got before the update), retrying, succeeded, dead,
# keyed and batched jobs all survive and carry on, and the counters stay
# right across the change of the count triggers.
#
# The library installed is always the current one, so the test also runs
# a 0.1.0 schema on the new library before the update, as a user's
# cluster does between installing the package and running ALTER EXTENSION.
#
# Last, the upgraded schema must equal a fresh install of the current
# version, object by object (functions, tables, columns, constraints,
# indexes, triggers, views, privileges, comments, dumped tables): a change
# to sql/pgjq.sql without its upgrade script fails here.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use JSON::PP;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('upgrade',
	conf => { 'pgjq.database' => 'postgres', 'pgjq.naptime' => '200ms' });

my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'pgjq'});
isnt($current, '0.1.0', "the current version ($current) is newer than the first release");
# the PGXN metadata names the same version as pgjq.control
my $meta = JSON::PP::decode_json(slurp_file("$FindBin::RealBin/../../META.json"));
is("$meta->{version},$meta->{provides}{pgjq}{version}", "$current,$current",
	"META.json gives the version of pgjq.control ($current)");

$node->safe_psql('postgres', q{CREATE EXTENSION pgjq VERSION '0.1.0'});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pgjq'}),
	'0.1.0', 'installed the first release, 0.1.0');

# jobs in every state, made by the 0.1.0 schema on the current library
$node->safe_psql('postgres', q{
	SELECT 1 FROM jq_create_queue('up', max_attempts => 3, backoff_base => '1 hour',
	                              backoff_cap => '1 hour');
	SELECT jq_enqueue_batch('up', (SELECT array_agg(jsonb_build_object('n', g))
	                                 FROM generate_series(1, 20) g));
	SELECT jq_enqueue('up', '{"later": true}', run_at => now() + interval '1 day');
	SELECT jq_enqueue('up', '{"keyed": true}', idempotency_key => 'k-1');
	SELECT jq_submit_batch('up', ARRAY['{"b": 1}', '{"b": 2}']::jsonb[], label => 'two');
	CREATE TABLE acked AS
	    SELECT job_id, jq_ack(job_id, lease_token, '{"score": 1}') AS ok FROM jq_dequeue('up', 3);
	SELECT jq_fail(job_id, lease_token, 'retry later') FROM jq_dequeue('up', 2);
	CREATE TABLE dead AS
	    SELECT job_id, jq_fail(job_id, lease_token, 'broken', permanent => true) AS state
	      FROM jq_dequeue('up', 2);
	CREATE TABLE held AS SELECT job_id, lease_token FROM jq_dequeue('up', 4, 3600);
});
is(counters_mismatch($node, 'postgres'), '0', '0.1.0 schema on the new library: counters equal the tables');
ok($node->poll_query_until('postgres', q{
		SELECT status LIKE 'the pgjq worker waits for ALTER EXTENSION pgjq UPDATE%'
		  FROM jq_worker_status()}),
	'the worker waits for the update: the schema is older than the library');
is($node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM jq.job) || ' ' ||
		(SELECT count(*) FROM jq.job_result) || ' ' || (SELECT count(*) FROM jq.dead_letter)}),
	'19 3 2', 'before the update: 19 jobs unfinished (4 leased), 3 succeeded, 2 dead');

# a dropped queue under the 0.1.0 schema still works on the new library
$node->safe_psql('postgres', q{
	SELECT 1 FROM jq_create_queue('gone');
	SELECT jq_enqueue('gone', '{}');
	SELECT jq_drop_queue('gone', force => true);
});

my $before = snapshot_tables($node, 'postgres', across_update => 1);

# the update itself, while a worker's session holds a lease (its
# transaction is committed; the lease lives in the row)
$node->safe_psql('postgres', 'ALTER EXTENSION pgjq UPDATE');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pgjq'}),
	$current, "updated to $current");
is(snapshot_tables($node, 'postgres', across_update => 1), $before,
	'every row is as it was before the update');
ok(defined wait_for_worker($node, 'postgres'),
	'after the update the worker serves the queues again');
is(counters_mismatch($node, 'postgres'), '0', 'after the update: counters equal the tables');

# the jobs in flight carry on
is($node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token, '{"after": true}'))
		FROM held}), '4', 'the 4 leases taken before the update ack with their tokens');
is($node->safe_psql('postgres', q{SELECT jq.jq_enqueue('up', '{"keyed": "again"}', idempotency_key => 'k-1')
		= (SELECT job_id FROM jq.idempotency_key WHERE key = 'k-1')}),
	't', 'an idempotency key from before the update still names its job');
is($node->safe_psql('postgres', q{SELECT jq.jq_redrive('up', (SELECT array_agg(job_id) FROM dead))}),
	'2', 'the dead letters of 0.1.0 redrive');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT r.state, ',') FROM acked a, jq.jq_result(a.job_id) r}),
	'succeeded', 'results stored by 0.1.0 are read back');
# drain everything that is ready (the retried jobs wait an hour: move them up)
$node->safe_psql('postgres', q{UPDATE jq.job SET run_at = now() WHERE state = 's' AND errors IS NOT NULL});
my $drained = $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token, NULL)) FROM jq.jq_dequeue('up', 100)});
cmp_ok($drained, '>=', 14, "the ready, retried and redriven jobs dequeue and ack ($drained)");
is($node->safe_psql('postgres', q{SELECT string_agg(state::text, ',') FROM jq.job}),
	's', 'only the job scheduled for tomorrow is left');
is(counters_mismatch($node, 'postgres'), '0', 'after draining: counters equal the tables');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT job_id) FROM jq.job_result}),
	'23 23', '23 jobs succeeded in all (24 enqueued, 1 scheduled for tomorrow), none twice');
is($node->safe_psql('postgres', q{SELECT percent_complete FROM jq.batch_progress WHERE label = 'two'}),
	'100.0', 'the batch from before the update completes');

# 0.2.0 behaviour is in force: the job invariants are checked by the trigger
my ($rc, $out, $err) = $node->psql('postgres', q{UPDATE jq.job SET state = 'x'});
like($err, qr/invalid state "x" for a row of jq.job/, 'the upgraded schema enforces the job invariants');

# the upgraded schema equals a fresh install, object by object
my $describe = q{
	WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pgjq'),
	m AS (SELECT d.classid, d.objid FROM pg_depend d, ext
	       WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
	         AND d.deptype = 'e'),
	rels AS (SELECT c.oid, c.relname, c.relkind FROM pg_class c JOIN m ON m.objid = c.oid
	          WHERE m.classid = 'pg_class'::regclass)
	SELECT string_agg(line, E'\n' ORDER BY line) FROM (
	  SELECT 'function ' || p.oid::regprocedure || ' acl=' || coalesce(p.proacl::text, '-')
	         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
	         || E'\n' || CASE WHEN p.prokind = 'a'
	                          -- an aggregate: its state function, type and start
	                          THEN (SELECT a.aggtransfn::regprocedure || ' ' || a.aggtranstype::regtype
	                                       || ' ' || coalesce(a.agginitval, '-')
	                                  FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
	                          ELSE pg_get_functiondef(p.oid) END AS line
	    FROM pg_proc p JOIN m ON m.objid = p.oid AND m.classid = 'pg_proc'::regclass
	  UNION ALL
	  SELECT 'relation ' || r.relname || ' kind=' || r.relkind::text
	         || ' options=' || coalesce(c.reloptions::text, '-')
	         || ' acl=' || coalesce(c.relacl::text, '-')
	         || ' comment=' || coalesce(obj_description(r.oid, 'pg_class'), '-')
	    FROM rels r JOIN pg_class c ON c.oid = r.oid
	  UNION ALL
	  SELECT 'column ' || r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
	         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
	         || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
	         || ' acl=' || coalesce(a.attacl::text, '-')
	    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
	    LEFT JOIN pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
	  UNION ALL
	  SELECT 'constraint ' || r.relname || '.' || co.conname || ' ' || pg_get_constraintdef(co.oid)
	    FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
	  UNION ALL
	  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
	    FROM rels r JOIN pg_index i ON i.indrelid = r.oid
	  UNION ALL
	  SELECT 'trigger ' || pg_get_triggerdef(t.oid)
	    FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
	  UNION ALL
	  SELECT 'view ' || r.relname || E'\n' || pg_get_viewdef(r.oid)
	    FROM rels r WHERE r.relkind = 'v'
	  UNION ALL
	  SELECT 'dumped ' || c.relname || ' ' || coalesce(x.cond, '')
	    FROM ext, pg_extension e,
	         unnest(e.extconfig, e.extcondition) AS x(reloid, cond)
	    JOIN pg_class c ON c.oid = x.reloid
	   WHERE e.oid = ext.oid
	  UNION ALL
	  SELECT 'other ' || pg_describe_object(m.classid, m.objid, 0)
	    FROM m WHERE m.classid NOT IN ('pg_proc'::regclass, 'pg_class'::regclass)
	) s};
# same_schema(DESCRIPTION, FRESH, WHAT): passes when a described schema
# equals a fresh install's; otherwise lists the lines only one side has
sub same_schema
{
	my ($got, $fresh, $what) = @_;
	my $name = "$what equals a fresh install of the current version";
	return pass($name) if $got eq $fresh;
	my $split = qr/\n(?=function |relation |column |constraint |index |trigger |view |dumped |other )/;
	my %u = map { $_ => 1 } split $split, $got;
	my %f = map { $_ => 1 } split $split, $fresh;
	diag("only in $what:\n" . join("\n", grep { !$f{$_} } sort keys %u));
	diag("only in a fresh install:\n" . join("\n", grep { !$u{$_} } sort keys %f));
	return fail($name);
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pgjq');
my $upgraded = $node->safe_psql('postgres', $describe);
my $fresh = $node->safe_psql('fresh', $describe);
cmp_ok(length($fresh), '>', 10000, 'the description of a fresh install is substantial');
same_schema($upgraded, $fresh, 'the upgraded schema');

# a database installed at 0.2.0, the last release, with jobs in flight,
# updates straight to the current version and equals a fresh install too
$node->safe_psql('postgres', 'CREATE DATABASE from020');
$node->safe_psql('from020', q{
	CREATE EXTENSION pgjq VERSION '0.2.0';
	SELECT 1 FROM jq_create_queue('q');
	SELECT jq_enqueue_batch('q', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[]);
	CREATE TABLE held AS SELECT job_id, lease_token FROM jq_dequeue('q', 2);
	SELECT jq_ack(job_id, lease_token) FROM held LIMIT 1;
});
$node->safe_psql('from020', 'ALTER EXTENSION pgjq UPDATE');
is($node->safe_psql('from020', q{SELECT extversion FROM pg_extension WHERE extname = 'pgjq'}),
	$current, "0.2.0 updated to $current");
is($node->safe_psql('from020', q{
		SELECT count(*) FILTER (WHERE jq.jq_ack(h.job_id, h.lease_token))
		  FROM held h JOIN jq.job j ON j.id = h.job_id}),
	'1', 'the lease left open under 0.2.0 acks with its token');
is($node->safe_psql('from020', q{SELECT count(*) FROM jq.jq_dequeue('q', 10)}),
	'1', 'the ready job dequeues');
my $from020 = $node->safe_psql('from020', $describe);
same_schema($from020, $fresh, 'the schema updated from 0.2.0');

# a database installed at 0.3.0, the last release, with jobs in flight:
# while its schema is older than the library, dequeues scan whole lanes
# (its count trigger misses an UPDATE of run_at, which the bounds need);
# after the update, a counter rebuild installs the bounds
$node->safe_psql('postgres', 'CREATE DATABASE from030');
$node->safe_psql('from030', q{
	CREATE EXTENSION pgjq VERSION '0.3.0';
	SELECT 1 FROM jq.jq_create_queue('q');
	SELECT jq.jq_enqueue_batch('q', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[]);
	CREATE TABLE held AS SELECT job_id, lease_token FROM jq.jq_dequeue('q', 2);
	SELECT jq.jq_ack(job_id, lease_token) FROM held LIMIT 1;
});
is($node->safe_psql('from030', 'SELECT jq.rebuild_counters()'),
	't', 'at 0.3.0 the counters rebuild (without bounds: jq.scan_bounds() is not there yet)');
is($node->safe_psql('from030', q{SELECT payload->>'n' FROM jq.jq_dequeue('q', 1)}),
	'3', 'at 0.3.0 the next job dequeues (from the lane\'s start)');
$node->safe_psql('from030', 'ALTER EXTENSION pgjq UPDATE');
is($node->safe_psql('from030', q{SELECT extversion FROM pg_extension WHERE extname = 'pgjq'}),
	$current, "0.3.0 updated to $current");
is($node->safe_psql('from030', q{
		SELECT jq.rebuild_counters()
		   AND (SELECT count(*) FROM jq.scan_bounds() WHERE state = 'ready' AND at = '-infinity') = 1}),
	't', 'after the update a rebuild installs the bounds');
is($node->safe_psql('from030', q{
		SELECT count(*) FILTER (WHERE jq.jq_ack(h.job_id, h.lease_token))
		  FROM held h JOIN jq.job j ON j.id = h.job_id}),
	'1', 'the lease left open under 0.3.0 acks with its token');
is($node->safe_psql('from030', q{SELECT string_agg(payload->>'n', ',') FROM jq.jq_dequeue('q', 10)}),
	'4', 'the ready job carried over dequeues through the bounds');
same_schema($node->safe_psql('from030', $describe), $fresh, 'the schema updated from 0.3.0');

$node->stop;
done_testing();
