# The ad-copy scoring rules of the example workers (docs/workers/README.md),
# computed in Perl, and the ad copy both tests give the workers, for the
# tests that check the workers' results: 010_worker_examples.pl (Python,
# Node, shell) and 014_c_worker.pl (C).
package ScoringRules;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(expected_score json_string job_mix ad_copies malformed_payloads);

my @banned = qw(guaranteed miracle cure winner);
my @cta = qw(buy shop order book);

# expected_score(COPY): (score, "reason,reason,...") for a decoded string
sub expected_score
{
	my ($copy) = @_;
	my $length = length $copy;    # characters: the strings here are decoded
	(my $lower = $copy) =~ tr/A-Z/a-z/;
	my %words = map { $_ => 1 } ($lower =~ /([a-z0-9]+)/g);
	my ($score, @reasons) = (50);
	if ($length < 20) { $score -= 20; push @reasons, 'too_short' }
	elsif ($length > 150) { $score -= 10; push @reasons, 'too_long' }
	else { $score += 10; push @reasons, 'good_length' }
	for my $w (@banned)
	{
		if ($words{$w}) { $score -= 25; push @reasons, "banned:$w" }
	}
	my ($action) = grep { $words{$_} } @cta;
	if (defined $action) { $score += 20; push @reasons, "call_to_action:$action" }
	else { $score -= 10; push @reasons, 'no_call_to_action' }
	$score = 0 if $score < 0;
	$score = 100 if $score > 100;
	return ($score, join(',', @reasons));
}

# json_string(STR): a JSON string literal in plain ASCII (\u escapes, with
# surrogate pairs above U+FFFF), so that no encoding crosses psql's stdin
sub json_string
{
	my ($s) = @_;
	my $out = '"';
	for my $c (split //, $s)
	{
		my $o = ord $c;
		if ($c eq '"' || $c eq '\\') { $out .= "\\$c" }
		elsif ($o >= 0x20 && $o < 0x7f) { $out .= $c }
		elsif ($o > 0xffff)
		{
			$o -= 0x10000;
			$out .= sprintf('\\u%04x\\u%04x', 0xd800 + ($o >> 10), 0xdc00 + ($o & 0x3ff));
		}
		else { $out .= sprintf('\\u%04x', $o) }
	}
	return "$out\"";
}

# ad_copies(): the 24 pieces of ad copy (decoded strings) of the workers'
# queues: mixed case, punctuation, non-ASCII letters, an emoji, lengths at
# the boundaries of the rules
sub ad_copies
{
	my $e_acute = "\x{e9}";
	my $rocket = "\x{1f680}";
	return (
		'Buy two, get one free',
		'Shop the autumn sale today: coats, boots and scarves at half price.',
		'GUARANTEED results or your money back. Order now!',
		'A miracle cure for tired skin. Guaranteed. Buy today.',
		'Be a winner: book your table',
		'hi',
		'',
		'Our buyers love the bookshop on the corner',      # no whole-word CTA
		'Shopping made simple for every season of the year',    # "shopping" is not "shop"
		'ORDER your custom print online; delivery in 2 days',
		"Caf${e_acute} cr${e_acute}me, fresh every morning. Book a table now!",
		"New ${rocket}${rocket} buy it today",    # 19 characters, 21 UTF-16 units, 27 bytes
		"New ${rocket}${rocket} buy it today!",                    # 20 characters
		'x' x 150,
		'Shop ' . ("caf$e_acute" x 35) . ' now!',           # 150 characters, 185 bytes
		('Shop ' . 'a' x 146),                               # 151 characters
		"line one\nline two\tBUY \"quoted\" and back\\slash",
		'Miracle cure for every winner, guaranteed. No need to act.',    # clamps to 0
		'book book book book book book book book book book',
		'Order, shop, buy or book: we take them all, in that order',
		'Nothing to see here, just words without a call to action.',
		"Caf${e_acute}s: winner of 2024",
		'buy1 shop2 order3 book4: digits stick to words',
		'Book-keeping made easy. Order the guide.',
	);
}

# malformed_payloads(): 6 payloads that have no "copy" string
sub malformed_payloads
{
	return (
		'{"nocopy": "Buy now"}',
		'{"copy": 5}',
		'{"copy": null}',
		'{"copy": {"text": "Buy now"}}',
		'{"copy": ["Buy now"]}',
		'["copy", "Buy now"]',
	);
}

# job_mix(N, EVERY, \@copies, \@malformed): the payloads of one queue, N
# jobs with a malformed one at every position i where i % EVERY == 3 (until
# they run out) and the copies in order elsewhere; returns
# [payload JSON, copy or undef] pairs
sub job_mix
{
	my ($n, $every, $copies, $malformed) = @_;
	my ($v, $m, @jobs) = (0, 0);
	for my $i (1 .. $n)
	{
		if ($i % $every == 3 && $m < @$malformed)
		{
			push @jobs, [ $malformed->[ $m++ ], undef ];
		}
		else
		{
			my $copy = $copies->[ $v++ ];
			push @jobs, [ qq({"n": $i, "copy": ) . json_string($copy) . '}', $copy ];
		}
	}
	die 'bad job mix' unless $v == @$copies && $m == @$malformed;
	return @jobs;
}

1;
