# ssmamba_lite: every set-up step lives here, so a fresh machine needs only `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ssmamba-installed
# Idle OpenMP threads sleep instead of spinning: the test suite runs several processes at once
# (CLI runs, two-process DDP) and spinning threads of one starve the others on small machines.
export OMP_WAIT_POLICY ?= PASSIVE
# Build mamba-ssm's CUDA kernels only where a GPU and nvcc are both present.
HAVE_GPU := $(shell command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
MAMBA_PKGS := causal-conv1d==1.7.0 mamba-ssm==2.3.2.post1

.PHONY: install cuda-kernels gpu-check test lint pytest tutorial book lab bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel packaging setuptools ninja
	$(PIP) install -q -e '.[dev]'
ifeq ($(HAVE_GPU),1)
	$(MAKE) cuda-kernels PY=$(PY)
else
	@echo "No GPU here: installing mamba-ssm without its CUDA kernels (its pure-PyTorch reference is the test oracle)."
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
	CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
	$(PIP) install -q --no-build-isolation $(MAMBA_PKGS)
endif
	$(PY) -m ipykernel install --user --name python3 >/dev/null
	@touch $@

# mamba-ssm + causal-conv1d with their CUDA kernels, built from source against the installed
# torch (FORCE_BUILD: no attempt to download a prebuilt wheel, which fails offline). mamba-ssm's
# setup compiles its own fixed list of GPU architectures, so this takes long (tens of minutes);
# the Triton scan needs no build at all (see docs/scan.md).
cuda-kernels:
	$(PIP) install -q wheel packaging ninja
	@start=$$(date +%s); \
	MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=$$(nproc) \
	$(PIP) install --no-build-isolation $(MAMBA_PKGS) && \
	echo "mamba-ssm and causal-conv1d built in $$(( $$(date +%s) - start )) s"

# Scan parity on every CUDA backend, bf16 training steps, throughput against ViT and ResNet
# (on a CPU-only machine: the Triton kernels in Triton's interpreter).
gpu-check: install
	$(PY) benchmarks/gpu_check.py --out build/gpu_check

lint: install
	$(PY) -m ruff check $(wildcard ssmamba_lite data_scripts tests benchmarks notebooks)

# Two workers (PYTEST_WORKERS=0: none, in this process). Each takes whole files, or the groups
# conftest.py names (the browser tests with the notebooks they render): fixtures are built once.
PYTEST_WORKERS ?= 2
pytest: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=25

test: lint pytest

# Executes every notebook headlessly with its default parameters into runs/<timestamp>/.
tutorial: install
	$(VENV)/bin/ssmamba-lite tutorial

# The course as a website in build/book/ (index.html): executes every notebook with its
# defaults first; BOOK_FROM=runs/<timestamp> (or build/notebooks) renders an earlier run instead.
book: install
	$(VENV)/bin/ssmamba-lite book $(if $(BOOK_FROM),--from $(BOOK_FROM))

lab: install
	$(VENV)/bin/jupyter lab notebooks/

bench: install
	$(PY) benchmarks/bench_scan.py

clean:
	rm -rf build .pytest_cache .ruff_cache
