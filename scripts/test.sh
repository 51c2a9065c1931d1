#!/usr/bin/env bash
# Set up (once) with the dev extra, fetch and verify MNIST (the end-to-end tests use it), lint, run the tests.
EXTRAS=dev source "$(dirname "$0")/env.sh"
digitpairs data fetch
ruff check src tests
python -m pytest "$@"
