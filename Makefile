# Herald — see README.md.
GO      ?= go
BIN     := bin/herald
ADDR    ?= 127.0.0.1:8081

.PHONY: build run test bench clean

build:
	$(GO) build -o $(BIN) ./cmd/herald

# The service with the embedded store and a generated dev key (prints a token and curl lines).
run: build
	./$(BIN) serve --dev --addr $(ADDR)

# Everything CI runs: installs what is missing, starts an ephemeral redis-server, runs all tests.
test:
	bash .ci/testenv.sh

clean:
	rm -rf bin

# Load scenarios S1–S5 (docs/benchmarks.md) against fresh herald processes, memory and Redis
# stores, with the team's reference tool beside ours when its source is there.
SSEBENCH_SRC ?= ../shared/tools/ssebench
BENCH_STORE  ?= both
BENCH_SCENARIOS ?= S1,S2,S3,S4,S5
bench: build
	$(GO) build -o bin/heraldbench ./cmd/heraldbench
	@if [ -d "$(SSEBENCH_SRC)" ]; then (cd "$(SSEBENCH_SRC)" && $(GO) build -o "$(CURDIR)/bin/ssebench" .); fi
	./bin/heraldbench -herald ./$(BIN) -store $(BENCH_STORE) -scenario $(BENCH_SCENARIOS) \
		$$( [ -x bin/ssebench ] && echo -ssebench ./bin/ssebench ) -md bin/bench.md
	$(GO) test -run '^$$' -bench . -benchtime 2s ./store/... ./stream/...
