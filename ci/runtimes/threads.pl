# Perl ithreads: N threads joined one by one (`join`), or detached and never waited for but by a shared
# count (`detach`). With THREADLEAK_OUTSIDE set, prints READY once done and waits, for ci/runtimes.py.
use strict;
use warnings;
use threads;
use threads::shared;
use Time::HiRes qw(sleep);

my ($mode, $n) = @ARGV;
my $done :shared = 0;
for (1 .. $n) {
    if ($mode eq 'join') {
        threads->create(sub { })->join;
    } else {
        sleep 0.0001 while do { lock($done); $_ - 1 - $done >= 16 };
        threads->create(sub { lock($done); $done++ })->detach;
    }
}
sleep 0.01 until $mode eq 'join' || do { lock($done); $done } == $n;
sleep 0.2;
if ($ENV{THREADLEAK_OUTSIDE}) { $| = 1; print "READY\n"; sleep 3; }
