# Two commands for a new user (see README):  make demo   and   make test
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfmec-installed
# The io profile (make test-io): TensorFlow 2.16 + tensorflow-io 0.37.1 in their own environment.
VENV_IO ?= .venv-io
PY_IO := $(VENV_IO)/bin/python
STAMP_IO := $(VENV_IO)/.tfmec-installed

.PHONY: demo test test-io test-keras3 test-tfkeras venv venv-io clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH; set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py Makefile | $(PY)
	$(PY) -m pip install --quiet -e ".[test,onnx,tune]"
	@touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded synthetic data (200k rows, Criteo-shaped): the baseline, MEC, AFM, both,
## and the competing int8 and hashing-trick tables side by side, every embedding method at 1/24 of the
## baseline's embedding bytes (MEC: popularity tiers chosen for that budget), and the frontier at 64x;
## table, runs/demo/report.md and figures. Two epochs (the baseline's best on this data), one of AFM
## fine-tuning.
demo: $(STAMP)
	$(VENV)/bin/tfmec run --data synthetic --rows 200000 --model deepfm --method none,mec,afm,mec+afm,int8,hash \
		--learning-rate 3e-3 --epochs 2 --afm-fine-tune-epochs 1 --target-ratio 24 --frontier 64 --seed 0 \
		--out runs/demo

## The whole test suite, in Keras 3 mode and in tf-keras mode.
test: $(STAMP)
	$(PY) -m pytest tests -q
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest tests -q

## The io profile: the Parquet engine --engine tfio (tensorflow-io 0.37.1, which needs TensorFlow 2.16.x,
## numpy<2, pyarrow<17: requirements-io.txt) in .venv-io, with tfmec installed on top (--no-deps: setup.py
## asks for TensorFlow 2.21). Runs the data tests and tests/test_tfio_engine.py, whose tests there must run
## (TFMEC_IO_PROFILE=1: never skipped): both engines give identical batches, and one end-to-end
## `tfmec run --format parquet --engine tfio` on a small Parquet file of synthetic rows.
$(STAMP_IO): requirements-io.txt setup.py Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH; set PYTHON=..."; exit 1; }
	test -x $(PY_IO) || $(PYTHON) -m venv $(VENV_IO)
	$(PY_IO) -m pip install --quiet --upgrade pip
	$(PY_IO) -m pip install --quiet -r requirements-io.txt
	$(PY_IO) -m pip install --quiet --no-deps -e .
	@touch $(STAMP_IO)

venv-io: $(STAMP_IO)

test-io: $(STAMP_IO)
	TFMEC_IO_PROFILE=1 $(PY_IO) -m pytest tests/test_readers.py tests/test_data_pipeline.py tests/test_tfio_engine.py -q

clean:
	rm -rf $(VENV) $(VENV_IO) runs build *.egg-info
