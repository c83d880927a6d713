#!/usr/bin/env bash
# Every test: (1) the package equals what the notebooks export and the notebooks are clean, (2) every notebook
# executes (cells flagged gpu/slow are skipped), (3) pytest. All three always run; the exit code is non-zero if any
# failed, and pytest's summary line is the last thing printed.
set -u
cd "$(dirname "$0")/.."
BIN=.venv/bin
export MPLBACKEND=Agg PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
status=0
echo "== 1/3 notebooks and package in sync, notebooks clean"
$BIN/python tools/check_sync.py || status=1
echo "== 2/3 executing notebooks (nbdev_test; cells flagged gpu or slow are skipped)"
$BIN/nbdev_test --n_workers 2 --timing || status=1
[ $status -ne 0 ] && echo "!! notebook checks FAILED (above): this run exits non-zero whatever pytest reports"
echo "== 3/3 pytest"
$BIN/python -m pytest tests -q -p no:cacheprovider --durations=15 ${PYTEST_ARGS:-}
rc=$?
[ $rc -ne 0 ] && status=$rc
exit $status
