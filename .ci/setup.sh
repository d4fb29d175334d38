#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine (idempotent; reuses what is there).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# Every install takes the versions CI passed with (constraints.txt; .ci/freeze-constraints rewrites it).
# llama-cpp-python compiles for minutes: build its wheel in the background while the rest installs. The
# build takes the same pin as the install, or --find-links would offer a wheel the install must not use.
mkdir -p .ci-wheels
( .venv/bin/pip wheel -q --no-deps -c constraints.txt -w .ci-wheels "llama-cpp-python>=0.3.2" > .ci-wheels/build.log 2>&1 ) &
llama_build=$!
if [ -x .ci/label-studio.sh ]; then .ci/label-studio.sh > .ci-wheels/label-studio.log 2>&1 & fi
ls_install=$!
if [ -x .ci/chromium.sh ]; then .ci/chromium.sh; fi

.venv/bin/pip install -q -c constraints.txt torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e ".[dev,ray]"
wait "$llama_build" || { cat .ci-wheels/build.log; exit 1; }
.venv/bin/pip install -q -c constraints.txt --find-links .ci-wheels -e ".[dev,ray,local]"
wait "$ls_install" || { cat .ci-wheels/label-studio.log; exit 1; }
