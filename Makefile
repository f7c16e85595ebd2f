# pnyx — the two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run run-sim test lint soak bench clean

SYSTEM_PACKAGES := etcd-server etcd-client chromium nftables faketime fuse3 libfuse3-3
SYSTEM_STAMP := $(VENV)/.system-stamp

$(STAMP): pyproject.toml $(SYSTEM_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fast]'
	touch $(STAMP)

# Debian packages the tests and benchmarks drive (real etcd 3.4 and etcdctl, chromium for the
# report test, nftables for partitions, fuse3 for the lazyfs layer): `apt-get update`
# once, then install what is missing.  Without root, say what to install and go on.
$(SYSTEM_STAMP): Makefile
	mkdir -p $(VENV)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "pnyx: not root, cannot install: $$missing (sudo apt-get install $$missing)" >&2; \
	  fi; \
	fi
	touch $(SYSTEM_STAMP)

# Demonstration: the etcd service on a real 3-node cluster, the leader killed mid-run, the
# history checked (verdict printed, HTML report written); under two minutes.
run: $(STAMP)
	$(BIN)/pnyx service-demo --report pnyx-service-report.html

# The earlier demonstration: simulated protocols under faults, a caught and shrunk bug.
run-sim: $(STAMP)
	$(BIN)/pnyx demo --report pnyx-demo-report.txt

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not soak" -n 2

# Long runs: never part of `make test`.
# Soak: 10,000 Raft seeds, 1,000 broadcast seeds, 2,000 etcd seeds (plain and swarm), 200
# kill -9 on a real cluster, and 1,500 generated histories per checker model plus 2,000
# against a brute-force oracle.
soak: $(STAMP)
	PNYX_SOAK=1 $(BIN)/python -m pytest -m "soak or not soak" \
		tests/raft/test_sim.py tests/broadcast tests/services/test_raft_kill9.py \
		tests/check/test_generated.py tests/sim/test_etcd_sim.py
	# pnyx test: every workload under every nemesis, on pnyx and on etcd: 144 runs of
	# PNYX_SOAK_TIME_S (default 60 s) each, two at a time (~1.5 h; 20 s runs: ~45 min)
	$(BIN)/python -m pytest -m soak -n 2 tests/harness/test_run.py tests/harness/test_lock_pauses.py
	# CRDTs: 1,500 seeds per state-based family, the full automerge-paper replay, 50
	# partition + kill -9 cycles of three document replicas
	PNYX_SOAK=1 $(BIN)/python -m pytest -m "soak or not soak" -n 2 tests/crdt/test_state_sim.py \
		tests/crdt/test_text_trace.py tests/crdt/test_doc_processes.py
	# Op-based CRDTs: 1,500 crdt-text seeds
	PNYX_SOAK=1 $(BIN)/python -m pytest -m "soak or not soak" tests/crdt/test_ops_sim.py
	# Dynamo-style replication: 500 seeds per configuration
	$(BIN)/python -m pytest -m soak -n 2 tests/dynamo
	# The etcd MVCC store against its model: 2,000 generated request sequences
	PNYX_SOAK=1 $(BIN)/python -m pytest -m "soak or not soak" tests/etcd/test_model.py
	# Consensus family: 10,000 Multi-Paxos and VR seeds each, 200 kill -9 of each on real processes
	PNYX_SOAK=1 $(BIN)/python -m pytest -m "soak or not soak" -n 2 tests/paxos/test_sim.py \
		tests/paxos/test_kill9.py tests/vr/test_sim.py tests/vr/test_kill9.py
	# Transactions: 300 seeds each of 2PC, 3PC (crash faults), the timestamp oracle; multi-Raft
	# sharding: 1,000 more seeds; primary-backup on real processes: 20 kill -9 rounds
	PNYX_SOAK=1 $(BIN)/python -m pytest -m soak -n 2 tests/commit tests/tso tests/multiraft \
		tests/replication_real/test_primary_backup_kill9.py
	# Transactions over multi-Raft: 1,000 more seeds per mode (with and without scans) and the
	# mutants in every mode, the bank workload on real processes under 200 kill -9;
	# multi-Raft: 200 kill -9, 40 replica moves under writing clients
	$(BIN)/python -m pytest -m soak -n 2 tests/txn
	PNYX_SOAK=1 $(BIN)/python -m pytest -m soak tests/txn_real
	$(BIN)/python -m pytest -m soak tests/multiraft_real/test_kill9.py tests/multiraft_real/test_move.py
	# The etcd service over Multi-Paxos and VR: 2,000 plain + 2,000 swarm seeds each
	PNYX_SOAK=1 $(BIN)/python -m pytest -m "soak or not soak" -n 2 tests/sim/test_etcd_over_consensus_sim.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,fast,bench]'
	# start-up figures assume byte-compiled modules, as any normal install has
	$(BIN)/python -m compileall -q src > /dev/null
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
