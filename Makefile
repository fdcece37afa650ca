# Herald — see README.md.
GO      ?= go
BIN     := bin/herald
ADDR    ?= 127.0.0.1:8081

.PHONY: build run test soak bench centrifugo clean example

# npm_ci installs a folder's npm packages when they are missing or older than its lock file.
npm_ci = cd $(1) && { [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ] || \
	npm ci --no-audit --no-fund --loglevel=error; }

build:
	$(GO) build -o $(BIN) ./cmd/herald

# The service with the embedded store and a generated dev key (prints a token and curl lines).
run: build
	./$(BIN) serve --dev --addr $(ADDR)

# The inbox example (clientjs/examples/inbox): a React conversation dialog on @laravel/echo-react
# and Herald, with a Node stand-in for the Laravel backend; it starts its own herald. Open the
# two URLs it prints. INBOX_PORT and INBOX_HERALD_PORT move it.
INBOX_PORT        ?= 8090
INBOX_HERALD_PORT ?= 8091
example: build
	@$(call npm_ci,clientjs/examples/inbox)
	cd clientjs/examples/inbox && PORT=$(INBOX_PORT) HERALD_PORT=$(INBOX_HERALD_PORT) HERALD_BIN=$(CURDIR)/$(BIN) node server.mjs

# Everything CI runs: installs what is missing, starts an ephemeral redis-server, runs all tests.
test:
	bash .ci/testenv.sh

# The fault matrix (docs/reliability.md): the short fault cases of `make test`, then the full-size
# ones — 1,000 stuck clients, a 10,000-client reconnect storm, a 10-minute churn soak, a hung
# Redis, and minutes of master kills and slot moves on a Redis Cluster and of Sentinel failovers;
# and docs/deploy.md's Caddy and HAProxy recipes, run like nginx's in `make test` (streams through
# each, idle cuts resumed). About 23 minutes. The tests start their own redis-servers (redis-server
# and redis-cli must be on PATH), Caddy and HAProxy (caddy and haproxy on PATH: apt-get install -y
# caddy haproxy) and herald processes on loopback; the proxy cases build the JS adapter's bundle
# (clientjs's npm packages, installed here when missing). HERALD_SOAK_CHURN=2m shortens the churn,
# HERALD_SOAK_STUCK=10s the stuck-client runs, HERALD_SOAK_CLUSTER=40s each Cluster/Sentinel case.
soak:
	@$(call npm_ci,clientjs)
	$(GO) test -tags soak -run 'Fault|Soak' -count=1 -timeout 60m -v ./test/

clean:
	rm -rf bin

# Load scenarios S1–S5 (docs/benchmarks.md) against fresh herald processes, memory and Redis
# stores, with the team's reference tool beside ours and its minimal SSE server as the yardstick
# when their source is there.
SSEBENCH_SRC ?= ../shared/tools/ssebench
BENCH_STORE  ?= both
BENCH_SCENARIOS ?= S1,S2,S3,S4,S5
BENCH_ARGS ?= # e.g. -herald-arg=--metrics=false
# Each scenario this many times, the stores interleaved; the goals judged on the medians.
BENCH_ROUNDS ?= 1
bench: build
	$(GO) build -o bin/heraldbench ./cmd/heraldbench
	@if [ -d "$(SSEBENCH_SRC)" ]; then (cd "$(SSEBENCH_SRC)" && $(GO) build -o "$(CURDIR)/bin/ssebench" . && \
		$(GO) build -o "$(CURDIR)/bin/testserver" ./cmd/testserver); fi
	./bin/heraldbench -herald ./$(BIN) -store $(BENCH_STORE) -scenario $(BENCH_SCENARIOS) \
		$$( [ -x bin/ssebench ] && echo -ssebench ./bin/ssebench -minimal ./bin/testserver ) \
		$$( [ -x bin/centrifugo ] && echo -centrifugo ./bin/centrifugo ) -md bin/bench.md -rounds $(BENCH_ROUNDS) $(BENCH_ARGS)
	@# The Redis path's p99 goal is stated at 10k publishes/s, where every server keeps the rate and
	@# the CPU per publish compares directly (docs/benchmarks.md). About 40 seconds.
	./bin/heraldbench -herald ./$(BIN) -store both -scenario S5 -rate 10000 -progress 0 \
		$$( [ -x bin/testserver ] && echo -minimal ./bin/testserver ) -md bin/bench-s5-10k.md -rounds $(BENCH_ROUNDS) $(BENCH_ARGS) >/dev/null
	@# Issue 11: memory per idle stream over HTTP/1.1 with TLS and over HTTP/2, 1 and 100 streams to
	@# a connection (S1; the figure is read after settle, so the hold is short). About 1.5 minutes.
	for p in "-proto h1 -tls" "-proto h2" "-proto h2 -streams-per-conn 100"; do \
		./bin/heraldbench -herald ./$(BIN) -store memory -scenario S1 -duration 2s -progress 0 \
			$$p $(BENCH_ARGS) >/dev/null || exit 1; done
	$(GO) test -run '^$$' -bench . -benchtime 2s ./store/... ./stream/...

# Centrifugo, the peer issue 13's goals are stated against, into bin/ (through the Go module
# proxy), where `make bench` finds it and runs it beside Herald on both its engines.
CENTRIFUGO_VERSION ?= v6.9.1
centrifugo:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/centrifugal/centrifugo/v6@$(CENTRIFUGO_VERSION)
