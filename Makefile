# Two commands do all set-up on a fresh machine:
#   make run    - the default comparison on built-in data (prints the table, writes results/)
#   make test   - the test suite (warnings are errors)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test test-slow bench references clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# constraints.txt pins torch to the CPU build; without it pip pulls CUDA (GBs).
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The default sweep, then the VAE's other checkpoints (the swiss roll and the digits, beta 1 and
# 4) with the methods made for an amortised guide: the report's inference-gap and
# disentanglement sections compare them (about 3 minutes more).
# RESULTS and RUN_ARGS (e.g. RUN_ARGS='--workers 1') let benchmarks/bench_make_run.py time this job.
VAE_CHECKPOINTS := swiss_roll swiss_roll-beta4 digits digits-beta4
RESULTS ?= results
RUN_ARGS ?=
run: $(STAMP)
	$(BIN)/python -m inference_comparisons run --out $(RESULTS) $(RUN_ARGS)
	for dataset in $(VAE_CHECKPOINTS); do \
		$(BIN)/python -m inference_comparisons run --models vae --dataset $$dataset --out $(RESULTS) $(RUN_ARGS) \
			--methods exact,svi_amortised,svi_semi_amortised,iwae || exit 1; done

# One pytest worker per core (pytest-xdist); worksteal evens out the slow tests, and the ten
# slowest are listed so the ~15-minute budget can be watched. The gold-standard convergence
# checks (marker `slow`, about 11 minutes more) run in `make test-slow`; CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=10 -m 'not slow'

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=10 -m slow

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Side-by-side speed ratios; bench_mcmc (about an hour on 2 cores) writes benchmarks/RESULTS.md.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.bench_potential
	$(BIN)/python -m benchmarks.bench_importance
	$(BIN)/python -m benchmarks.bench_hmm
	$(BIN)/python -m benchmarks.bench_state_space
	$(BIN)/python -m benchmarks.bench_lockstep_starts
	$(BIN)/python -m benchmarks.bench_compile
	$(BIN)/python -m benchmarks.bench_mcmc

# Rebuild the stored gold-standard posterior reference of each model's simulated data (ChEES: 1-8 minutes
# each on 2 cores; each rebuild is checked against the stored build before it replaces it).
references: $(STAMP)
	for model in $$($(BIN)/python -c "import zoo; print(' '.join(m for m in zoo.available_models() if 'posterior' in zoo.get_model(m).info.targets))"); do \
		$(BIN)/python -m inference_comparisons reference $$model || exit 1; done

clean:
	rm -rf $(VENV) results
