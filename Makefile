# xnat — user-space NAT gateway and stateful firewall on AF_XDP.
GO        ?= go
BIN       := bin
CMDS      := $(notdir $(wildcard cmd/*))
FUZZTIME  ?= 20s
STATICCHECK_VERSION := v0.8.2

.PHONY: all build test race bench fuzz lint demo clean instructions deps

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

# make deps: install the Debian packages make test and make demo need and
# the machine lacks (as root; scripts/deps.sh). Both targets run it first.
deps:
	GO=$(GO) bash scripts/deps.sh

# make test: unit, golden, fuzz-corpus, stress and namespace tests (root),
# then all of them again under the race detector. One package at a time
# (-p 1): the namespace tests of several packages share the host's
# kernel-wide state (nf_conntrack_max, conntrack events, the CPUs the
# AF_XDP workers are pinned to), and one package's kernel run must not
# change another's.
test:
	GO=$(GO) bash scripts/deps.sh test
	@$(MAKE) --no-print-directory build
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 ./...
	$(GO) test -count=1 -p 1 -race ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# make instructions: the established path's instructions per packet (and per new connection), counted
# by callgrind (scripts/instructions.sh; `bash scripts/instructions.sh --fullcone` puts FULLCONENAT
# beside MASQUERADE): a figure timing noise cannot move.
# It counts the portable Go flow table and, where the CPU has it, the vector one.
instructions:
	bash scripts/instructions.sh --impl go
	bash scripts/instructions.sh --impl avx2 || true

# make fuzz: every fuzz target for FUZZTIME each (FUZZTIME=5m make fuzz). Give
# each at least 10s: the fuzzer first replays its cached corpus, and a run
# that ends during that replay reports "context deadline exceeded".
fuzz:
	@case "$(FUZZTIME)" in [0-9]s) echo "make fuzz: FUZZTIME=$(FUZZTIME) is too short (10s at least)"; exit 2;; esac
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# make demo: as root — a throwaway namespace topology (two inside hosts,
# xnat, a server), xnatd with MASQUERADE and a small table, real traffic,
# xnatctl's view of it, then the table filled with ASSURED connections and
# one more burst refused: the "table full, dropping packet" event and the
# table_full counter, checked (the demo fails without them); everything it
# made is removed on exit (scripts/demo.sh).
demo:
	GO=$(GO) bash scripts/deps.sh demo
	bash scripts/demo.sh

clean:
	rm -rf $(BIN)
