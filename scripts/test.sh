#!/usr/bin/env bash
# Set up (once) with the dev, mlflow, ray and pandas extras, fetch and verify MNIST (the end-to-end tests use it),
# lint, run the tests.
# Headless Chromium renders the HTML report in one test; it is installed here where absent (Debian's package, as
# root or through sudo) and that test is skipped only if it cannot be.
EXTRAS=dev,mlflow,ray,pandas source "$(dirname "$0")/env.sh"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && command -v apt-get >/dev/null; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo -n"
  { $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "Chromium could not be installed: the HTML rendering test will be skipped" >&2
fi
# the example package of architectures of one's own, installed as a user would (its entry point is tested)
python -m pip install --quiet --no-deps --no-build-isolation ./examples/digitpairs-examples
digitpairs data fetch
ruff check src tests scripts
lint-imports  # the layers: pyproject.toml [tool.importlinter]
python -m pytest "$@"
