# pgjq: SQL-native job queues for PostgreSQL (PGXS build)
#
# On a fresh machine start with the two entry points, which install what
# they need first (they work before pg_config exists):
#   make demo    run the end-to-end demo on a throwaway cluster
#   make test    run every test suite on throwaway clusters
#
# With PostgreSQL's server dev package installed, the usual PGXS targets
# work too: make, make install, make installcheck.
#
# Test layout (the top level is fixed: Makefile, pgjq.control, sql, src,
# test, expected, bench, README.md):
#   sql/<test>.sql + expected/<test>.out   pg_regress, as pg_cron does:
#                                          PG 14/15's pg_regress reads both
#                                          from one --inputdir, here "."
#   test/specs + test/expected             isolation specs
#   test/t                                 TAP (PostgreSQL::Test::Cluster);
#                                          test/t/PgjqTest.pm holds what the
#                                          TAP files share
#   test/pgtap                             the generated hostile-input test,
#                                          run by pg_prove
#   test/bin                               the harness behind make test
#
# Beside them: clients/c (the C client library that bench/, the example C
# worker in docs/workers/c and the TAP tests build against), bench/ (make
# bench, make bench-quick, make soak), docs/.

EXTENSION = pgjq
EXTVERSION = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big = pgjq
OBJS = \
	src/pgjq.o \
	src/vocabulary.o \
	src/statements.o \
	src/queue.o \
	src/enqueue.o \
	src/lease.o \
	src/longpoll.o \
	src/hotpath.o \
	src/compact.o \
	src/bounds.o \
	src/counters.o \
	src/keys.o \
	src/usage.o \
	src/count_trigger.o \
	src/wakeup.o \
	src/waiters.o \
	src/shmem.o \
	src/slots.o \
	src/launcher.o \
	src/utility.o \
	src/worker.o

# sql/pgjq.sql is the one editable install script: the build copies it to
# sql/pgjq--<default_version>.sql.  Released versions are frozen: their
# install scripts (sql/pgjq--0.1.0.sql) and the upgrade deltas between them
# (sql/pgjq--A--B.sql) are committed and never edited.  When releasing,
# bump default_version in pgjq.control and META.json, add the delta from
# the previous version (test/t/015_upgrade.pl proves it yields a fresh
# install's schema), and commit the built script of the previous version
# with "git add -f" (.gitignore ignores every built install script).
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

# Warnings are errors in the test command and CI (test/bin/common.sh
# passes WERROR=-Werror), not in a packager's plain "make".
WERROR ?=
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers $(WERROR)
PG_CPPFLAGS = -I$(srcdir)/src -DPGJQ_VERSION='"$(EXTVERSION)"'

# pg_regress: tests run in this order against a temporary instance that
# preloads pgjq (test/pgjq.conf)
REGRESS = install queue enqueue dequeue ack result fail lease_control idempotency \
	batch privileges search_path bad_input periodic stats calling_convention rules bounds \
	compact keys ordered_keys progress deadlines usage rate_limits longpoll shard
REGRESS_OPTS = --temp-config=$(srcdir)/test/pgjq.conf --temp-instance=./tmp_check_regress

ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=output_iso --load-extension=$(EXTENSION) \
	--temp-config=$(srcdir)/test/pgjq.conf --temp-instance=./tmp_check_iso

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = sql/$(EXTENSION)--$(EXTVERSION).sql results output_iso \
	tmp_check tmp_check_regress tmp_check_iso regression.diffs regression.out log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

ifneq ($(PGXS),)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql $(EXTENSION).control
	cp $< $@

# every source file includes pgjq.h and compat.h; the module headers are
# few and small: rebuild all when any header changes
$(OBJS): $(wildcard src/*.h) $(EXTENSION).control
else
# Without pg_config only the entry points below can run; they install it.
all install installcheck:
	@echo "pg_config not found: install postgresql-server-dev-15, or run 'make test' or 'make demo', which install it" >&2
	@exit 1
endif

.PHONY: demo test bench bench-quick bench-keys bench-progress bench-proxy soak

demo:
	bash test/bin/demo.sh

test:
	bash test/bin/run-tests.sh

bench:
	bash bench/run.sh full

bench-quick:
	bash bench/run.sh quick

bench-keys:
	bash bench/keys.sh

bench-progress:
	bash bench/progress.sh

bench-proxy:
	bash bench/proxy.sh

soak:
	bash bench/soak.sh
