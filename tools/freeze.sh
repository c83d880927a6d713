#!/usr/bin/env bash
# Rewrite constraints.txt from the current .venv (after changing dependency ranges in settings.ini).
cd "$(dirname "$0")/.."
{ echo "# Reproducible developer installs: pip install -c constraints.txt -e '.[dev]' (regenerate with tools/freeze.sh)"
  .venv/bin/pip freeze --exclude-editable | grep -v -i '^spatial.dl' | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'; } > constraints.txt
