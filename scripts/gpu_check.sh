#!/usr/bin/env bash
# The GPU checks in one go (about 5 minutes), each figure written under OUT (default: runs/gpu-check): the GPU tests,
# `bench --device cuda` at 28x28 with neither, each and both of --cuda-graphs and --matmul-conv and at 14x14 with
# neither and both, the seconds per epoch of each and a GPU profile with both (scripts/profile_gpu.py), and the paper
# study with both and without (the whole command timed; the two tables, within one SD row by row, compared by the
# reader).
#
#   bash scripts/gpu_check.sh [OUT]
#
# It runs this checkout's digitpairs with `$PYTHON` (default: .venv/bin/python if there is one, else python3, e.g. on a
# machine with a torch of its own). MNIST comes from $DIGITPAIRS_DATA or the usual cache.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}  # this checkout's digitpairs, whatever is installed
out=${1:-runs/gpu-check}
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
TIMEFORMAT="%R s"

{ nvidia-smi -L; lscpu | grep "Model name"; "$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU seen by torch')"; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

timeout 180 "$py" -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_steps.py > "$out/tests.txt" 2>&1
tail -3 "$out/tests.txt"

for size in 28 14; do  # at 14, neither and both
  for options in "" --cuda-graphs --matmul-conv "--cuda-graphs --matmul-conv"; do
    [ "$size" = 14 ] && [ "$options" = --cuda-graphs -o "$options" = --matmul-conv ] && continue
    name=bench-$size$(echo $options | tr -d ' ')
    timeout 60 "$py" -m digitpairs bench --device cuda --size "$size" $options > "$out/$name.txt" 2>&1
    echo "$name: $(grep -E "^(engine|speedup)" "$out/$name.txt" | tr '\n' ' ')"
    grep -q "^speedup" "$out/$name.txt" || echo "  $(tail -1 "$out/$name.txt")"  # the error's line
  done
done

timeout 120 "$py" scripts/profile_gpu.py --cuda-graphs --matmul-conv > "$out/profile.txt" 2>&1
grep -E "ms per epoch|kernels" "$out/profile.txt"

for options in "--cuda-graphs --matmul-conv" ""; do  # the new path first: the plain one is measured already
  [ "$SECONDS" -gt 480 ] && echo "skipped the paper study $options: past 8 minutes" && continue
  name=paper$(echo $options | tr -d ' ')
  { time timeout 150 "$py" -m digitpairs reproduce --device cuda $options --store "$out/$name.sqlite" \
      --out "$out/$name" > "$out/$name.log" 2>&1; echo $? > "$out/$name.rc"; } 2> "$out/$name.time"
  echo "$name: exit $(cat "$out/$name.rc"), whole command $(cat "$out/$name.time"); training:" \
       "$(tr '\r' '\n' < "$out/$name.log" | grep -E "runs: 100%" | tail -1)"
  [ "$(cat "$out/$name.rc")" = 0 ] || echo "  $(tr '\r' '\n' < "$out/$name.log" | tail -1)"
done
