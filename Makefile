# Herald — see README.md.
GO      ?= go
BIN     := bin/herald
ADDR    ?= 127.0.0.1:8081

.PHONY: build run test bench fuzz clean

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
