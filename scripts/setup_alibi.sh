#!/usr/bin/env bash
# Creates .venv-alibi, the side venv of the optional alibi-detect backend (its tests in
# scripts/test.sh, the peers of bench/drift). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/steps.sh
source scripts/steps.sh
# Why a second venv: the optional alibi-detect backend cannot be tested in .venv. alibi-detect
# 0.13 imports numba, numba < 0.60 needs numpy < 2, and the core runs on numpy 2 (in .venv
# alibi-detect fails to import and its tests skip). And alibi-detect >= 0.11.5 is under the
# Business Source License, so it never enters the core (only the optional extra `alibi`).
# .venv-alibi holds numpy < 2, alibi-detect, PyTorch (for the MMD and LSDD detectors), pytest
# and mlvigil itself (core only, editable), pinned by constraints-alibi.txt. PyTorch is PyPI's
# Linux wheel, which is the CUDA build (~540 MB, plus ~2.5 GB of nvidia-* wheels; it runs on
# the CPU): the first build downloads ~3 GB and takes minutes. Idempotent like setup.sh: a
# second run installs only what changed. To re-pin: in a new venv, `pip install -e .
# alibi-detect 'numpy<2' torch pytest` without -c, then `pip freeze --exclude-editable` below
# constraints-alibi.txt's header.
alibi=.venv-alibi
log="$alibi/setup.log"
if [ ! -x "$alibi/bin/python" ]; then
  step "$log" "creating $alibi (alibi-detect backend tests)" "${PYTHON:-python3}" -m venv "$alibi"
fi
stamp="$alibi/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints-alibi.txt -nt "$stamp" ]; then
  step "$log" "updating pip in $alibi" "$alibi/bin/python" -m pip install --upgrade pip
  step "$log" "installing alibi-detect, PyTorch and mlvigil into $alibi (~3 GB the first time)" \
    "$alibi/bin/python" -m pip install -c constraints-alibi.txt -e . alibi-detect 'numpy<2' torch pytest pytest-timeout
  touch "$stamp"
fi
