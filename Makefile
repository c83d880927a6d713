# Two entry points (see README): `make demo` and `make test`. Both create .venv once; re-running reinstalls nothing
# unless settings.ini, setup.py or constraints.txt changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MPLBACKEND := Agg

.PHONY: demo test env docs bench-quick clean-env export

demo: $(STAMP)
	$(BIN)/spatial-dl demo

test: $(STAMP)
	@bash tools/test_all.sh

env: $(STAMP)

# CPU torch is installed first and pinned so pip never resolves a multi-GB CUDA build; the package itself only
# declares a range. constraints.txt pins everything else for reproducible developer installs.
$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -qq --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

docs: $(STAMP)
	$(BIN)/python tools/build_docs.py --execute

bench-quick: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean-env:
	rm -rf $(VENV)
