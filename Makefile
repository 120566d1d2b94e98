# Two commands for a new user (see README):  make demo   and   make test
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfmec-installed

.PHONY: demo test test-keras3 test-tfkeras venv clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH; set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py Makefile | $(PY)
	$(PY) -m pip install --quiet -e ".[test,onnx,tune]"
	@touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded synthetic data (200k rows, Criteo-shaped): the baseline, MEC, AFM, both,
## and the competing int8 and hashing-trick tables side by side; table, runs/demo/report.md and figures.
## Two epochs (the baseline's best on this data), three of stage 1, one of AFM fine-tuning: under
## 10 minutes on 2 cores.
demo: $(STAMP)
	$(VENV)/bin/tfmec run --data synthetic --rows 200000 --model deepfm --method none,mec,afm,mec+afm,int8,hash \
		--learning-rate 3e-3 --epochs 2 --stage1-epochs 3 --afm-fine-tune-epochs 1 --seed 0 --out runs/demo

## The whole test suite, in Keras 3 mode and in tf-keras mode.
test: $(STAMP)
	$(PY) -m pytest tests -q
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest tests -q

clean:
	rm -rf $(VENV) runs build *.egg-info
