#!/usr/bin/env bash
# Installs the wheel in dist/ the way the README says, into a fresh venv, and
# runs scripts/wheel_smoke.py there with no compiler on the PATH.
#
#   scripts/test_wheel.sh [python]     (default: python3.11 or python3)
#
# Django (a pure-Python wheel) is downloaded from the index first; Listy itself
# is installed with --no-index --only-binary :all: from dist/, so pip cannot
# fall back to building the sdist.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-$(command -v python3.11 || command -v python3)}
ls dist/django_listy-*.whl >/dev/null 2>&1 || { echo "no wheel in dist/: run make wheel" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip download -q --only-binary :all: -d "$work/deps" "Django>=5.2,<7"

# Only the venv's bin on the PATH: no cc, cargo, rustc, zig or ld can be found.
# The venv's python is a symlink to the base interpreter: it runs from here.
env -i HOME="$work" PATH="$work/venv/bin" \
  "$work/venv/bin/python" -m pip install -q --no-index --only-binary :all: \
  --find-links dist --find-links "$work/deps" django-listy
cd "$work"  # not the source tree: `import listy` must find the installed wheel
env -i HOME="$work" PATH="$work/venv/bin" "$work/venv/bin/python" "$OLDPWD/scripts/wheel_smoke.py"
