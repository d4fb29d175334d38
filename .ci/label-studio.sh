#!/usr/bin/env bash
# Label Studio 1.23.2 in its own virtualenv (.venv-ls): it pins Django 5.2 and openai 1.x, so it stays
# apart from tnt's environment. The end-to-end test starts .venv-ls/bin/label-studio itself
# (tests/ls_server.py); TNT_LABEL_STUDIO_BIN points elsewhere. Idempotent; about 1 GB and a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

version="1.23.2"
if [ -x .venv-ls/bin/python ] && .venv-ls/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$version')" 2>/dev/null; then
  echo "Label Studio $version already in .venv-ls"
  exit 0
fi
python3 -m venv .venv-ls
# The versions CI passed with (constraints-label-studio.txt, rewritten by .ci/freeze-constraints).
.venv-ls/bin/pip install -q -c constraints-label-studio.txt --upgrade pip
.venv-ls/bin/pip install -q -c constraints-label-studio.txt "label-studio==$version"
.venv-ls/bin/python -c "import importlib.metadata as m; print('Label Studio', m.version('label-studio'), 'in .venv-ls')"
