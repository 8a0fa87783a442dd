# The ad-copy scoring rules of the example workers (docs/workers/README.md),
# computed in Perl, for the tests that check the workers' results:
# 010_worker_examples.pl (Python, Node, shell) and 014_c_worker.pl (C).
package ScoringRules;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(expected_score json_string job_mix);

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
