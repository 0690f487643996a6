# rolypoly — two commands do everything on a fresh Debian machine:
#   make demo   set up (system packages, .venv) and run the demo
#   make test   set up and run the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rolypoly-installed
# The Groove MIDI Dataset beside the checkout, when it is there (else $ROLYPOLY_GMD or the user data folder).
ifneq ($(wildcard ../shared/datasets/groove/info.csv),)
export ROLYPOLY_GMD ?= $(abspath ../shared/datasets/groove)
endif
# Needed to run: PortAudio and libsndfile (audio I/O), gcc and Python headers (aubio builds from source).
REQUIRED_DEBS := libportaudio2 libsndfile1 gcc
# Needed for the live tests and for audio/MIDI without a sound card: a JACK server (dummy backend);
# sampled instruments and drum kits: FluidSynth and General MIDI soundfonts.
OPTIONAL_DEBS := jackd2 fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small

.PHONY: setup system demo test bench evaluate clean

setup: system $(STAMP)

system:
	@if ! command -v dpkg >/dev/null; then \
	  echo "rolypoly: not a Debian system; make sure PortAudio, libsndfile, gcc, Python headers and (for the live tests) JACK are installed"; exit 0; fi; \
	missing=""; for p in $(REQUIRED_DEBS) $(OPTIONAL_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	headers=$$($(PYTHON) -c 'import sysconfig,os;print(os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))'); \
	[ "$$headers" = True ] || missing="$$missing python3-dev"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "rolypoly: installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "rolypoly: missing system packages:$$missing"; \
	  echo "  install them with: sudo apt-get install$$missing"; \
	  for p in $$missing; do case " $(OPTIONAL_DEBS) " in *" $$p "*) ;; *) exit 1;; esac; done; \
	  echo "  (continuing: without JACK the live tests are skipped)"; \
	fi

# pip speaks only of errors (-qq) and build back-ends keep their warnings to themselves: set-up
# prints what a user needs to read. torch goes first, pinned: this version is the CPU build;
# anything else pulls gigabytes of CUDA.
PIP := PYTHONWARNINGS=ignore $(BIN)/pip install -qq --disable-pip-version-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "rolypoly: creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "rolypoly: installing PyTorch 2.13.0 (CPU build) into $(VENV)"
	@$(PIP) --upgrade pip
	@$(PIP) torch==2.13.0
	@echo "rolypoly: installing rolypoly and its Python packages into $(VENV)"
	@$(PIP) -e '.[test]'
	@touch $@
	@echo "rolypoly: ready; the command is $(BIN)/rolypoly (or: source $(VENV)/bin/activate)"

demo: setup
	$(BIN)/rolypoly demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/rolypoly bench decide --json bench-decide.json

evaluate: setup
	$(BIN)/rolypoly evaluate timing --split test --json evaluate-timing.json

clean:
	rm -rf $(VENV) demo-output *.egg-info
