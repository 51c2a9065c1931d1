#!/usr/bin/env bash
# Set up (once), fetch and verify MNIST, run the report's study; extra arguments go to `digitpairs reproduce`.
source "$(dirname "$0")/env.sh"
digitpairs data fetch
digitpairs reproduce "$@"
