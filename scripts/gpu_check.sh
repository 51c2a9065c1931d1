#!/usr/bin/env bash
# The GPU checks in one go (about 4 minutes on an H200), every figure written under OUT (default: runs/gpu-check), in
# at most 8 files: machine.txt (the GPU, CPU, torch, and the GPU tests' summary); bench.txt (`bench --device cuda` at
# 28x28 and 14x14, with the default CUDA graphs and with --no-cuda-graphs, and at 28x28 with --matmul-conv);
# study.txt (the paper study with the defaults, with --no-cuda-graphs, and with the defaults again: the whole
# command timed, tqdm's training time, and whether the two default tables are equal); table_graphs.md,
# table_plain.md and report_graphs.md; profile.txt (the seconds per epoch of each option and a GPU profile by kernel
# kind with CUDA graphs, scripts/profile_gpu.py).
#
#   bash scripts/gpu_check.sh [OUT]
#
# It runs this checkout's digitpairs with `$PYTHON` (default: .venv/bin/python if there is one, else python3, e.g. on a
# machine with a torch of its own). MNIST comes from $DIGITPAIRS_DATA or the usual cache.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # this checkout's digitpairs
out=$(realpath -m "${1:-runs/gpu-check}")
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
tmp=$(mktemp -d)
mkdir -p "$out" && : > "$out/bench.txt" && : > "$out/study.txt"
TIMEFORMAT="%R s"

{ nvidia-smi -L; lscpu | grep "Model name"; "$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU seen by torch')"; } > "$out/machine.txt" 2>&1
timeout 120 "$py" -m pytest -q -p no:cacheprovider tests/engine/test_device.py tests/cli/test_cli.py -k "cuda or graphs or device" \
  > "$tmp/tests.txt" 2>&1
tail -4 "$tmp/tests.txt" >> "$out/machine.txt"
cat "$out/machine.txt"

for run in "28" "28 --no-cuda-graphs" "14" "14 --no-cuda-graphs" "28 --matmul-conv"; do
  set -- $run
  echo "== bench --size $*" >> "$out/bench.txt"
  timeout 60 "$py" -m digitpairs bench --device cuda --size "$@" >> "$out/bench.txt" 2>&1
  echo "bench --size $*: $(grep -E "^(engine|speedup)" "$out/bench.txt" | tail -2 | tr '\n' ' ')"
done

study() {  # name, options
  { time timeout 150 "$py" -m digitpairs reproduce --device cuda "${@:2}" --store "$tmp/$1.sqlite" --out "$tmp/$1" \
      > "$tmp/$1.log" 2>&1; echo "exit $?" > "$tmp/$1.rc"; } 2> "$tmp/$1.time"
  echo "study $1 ${*:2}: $(cat "$tmp/$1.rc"), whole command $(cat "$tmp/$1.time"); training:" \
       "$(tr '\r' '\n' < "$tmp/$1.log" | grep -E "runs: 100%" | tail -1)" | tee -a "$out/study.txt"
  tr '\r' '\n' < "$tmp/$1.log" | grep -v "round \|^ *$\|it/s\|epoch/s" | tail -4 >> "$out/study.txt"
}
study graphs
cp "$tmp/graphs/table.md" "$out/table_graphs.md"; cp "$tmp/graphs/report.md" "$out/report_graphs.md"
study plain --no-cuda-graphs
cp "$tmp/plain/table.md" "$out/table_plain.md"
study graphs2
accuracy() { cut -d'|' -f1-6 "$1"; }  # the table without its timings
if [ -f "$tmp/graphs2/table.md" ] && diff <(accuracy "$tmp/graphs/table.md") <(accuracy "$tmp/graphs2/table.md") > /dev/null
then
  echo "the defaults twice: the same table" | tee -a "$out/study.txt"
else
  echo "the defaults twice: TABLES DIFFER (or missing)" | tee -a "$out/study.txt"
fi

timeout 90 "$py" scripts/profile_gpu.py --cuda-graphs > "$out/profile.txt" 2>&1
grep -E "ms per epoch|kernels" "$out/profile.txt"
rm -rf "$tmp"
echo "total $SECONDS s"
