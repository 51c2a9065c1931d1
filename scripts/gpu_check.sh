#!/usr/bin/env bash
# The GPU checks in one go, every figure written under OUT (default: runs/gpu-check), in at most 8 files.
#
#   bash scripts/gpu_check.sh [OUT] [all|builtin|own]    (default: all, about 9 minutes on an H200)
#
# builtin (about 4 minutes): machine.txt (the GPU, CPU, torch, and the GPU tests' summary); bench.txt (`bench --device
# cuda` at 28x28 and 14x14, with the default CUDA graphs and with --no-cuda-graphs, and at 28x28 with --matmul-conv);
# study.txt (the paper study with the defaults, with --no-cuda-graphs, and with the defaults again: the whole command
# timed, tqdm's training time, and whether the two default tables are equal); table_graphs.md, table_plain.md and
# report_graphs.md; profile.txt (the seconds per epoch of each option and a GPU profile by kernel kind with CUDA
# graphs, scripts/profile_gpu.py).
# own (about 5 minutes): machine.txt, and own.txt: networks of your own on the GPU with the example package
# (examples/digitpairs-examples, installed into a temporary folder): their GPU tests; `bench --arch` for the residual
# branch (28x28 and 14x14, with and without CUDA graphs) and the MLP; the example study (examples.toml) timed, with
# its table; a study file whose plugin vmap cannot take (it reads a value back to the host), with `predict`; and
# `bench --device cpu` on this machine's CPU pinned to 2 cores, at both sizes.
#
# It runs this checkout's digitpairs with `$PYTHON` (default: .venv/bin/python if there is one, else python3, e.g. on a
# machine with a torch of its own). MNIST comes from $DIGITPAIRS_DATA or the usual cache.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # this checkout's digitpairs
out=$(realpath -m "${1:-runs/gpu-check}")
part=${2:-all}
case $part in all|builtin|own) ;; *) echo "part must be all, builtin or own, not $part" >&2; exit 2;; esac
py=$(realpath -s "$(command -v "${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}")")
tmp=$(mktemp -d)
mkdir -p "$out"
TIMEFORMAT="%R s"

{ nvidia-smi -L; lscpu | grep "Model name"; "$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU seen by torch')"; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

builtin() {
  timeout 120 "$py" -m pytest -q -p no:cacheprovider tests/engine/test_device.py tests/cli/test_cli.py -k "cuda or graphs or device" \
    > "$tmp/tests.txt" 2>&1
  tail -4 "$tmp/tests.txt" >> "$out/machine.txt"; tail -1 "$tmp/tests.txt"

  : > "$out/bench.txt"; : > "$out/study.txt"
  for run in "28" "28 --no-cuda-graphs" "14" "14 --no-cuda-graphs" "28 --matmul-conv"; do
    set -- $run
    timeout 60 "$py" -m digitpairs bench --device cuda --size "$@" > "$tmp/bench.txt" 2>&1 || echo "exit $?" >> "$tmp/bench.txt"
    { echo "== bench --size $*"; cat "$tmp/bench.txt"; } >> "$out/bench.txt"
    echo "bench --size $*: $(grep -E "^(engine|speedup|exit)" "$tmp/bench.txt" | tr '\n' ' ')"
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
}

own() {  # networks of your own, from the example package and a plugin file
  local site=$tmp/site log=$out/own.txt
  "$py" -m pip install -q --no-deps --no-build-isolation --no-index --target "$site" examples/digitpairs-examples \
    > "$tmp/pip.txt" 2>&1 || { echo "the example package did not install: $(tail -1 "$tmp/pip.txt")" | tee "$log"; return; }
  local PYTHONPATH=$site:$PYTHONPATH
  export PYTHONPATH
  echo "== GPU tests: tests/model/test_members.py tests/engine/test_device.py -k cuda" > "$log"
  timeout 180 "$py" -m pytest -q -p no:cacheprovider tests/model/test_members.py tests/engine/test_device.py -k cuda 2>&1 | tail -4 >> "$log"
  for run in "residual_ws_aux --size 28" "residual_ws_aux --size 28 --no-cuda-graphs" "residual_ws_aux --size 14" \
             "mlp_ws_aux --size 28"; do
    set -- $run
    timeout 60 "$py" -m digitpairs bench --device cuda --arch "$@" > "$tmp/bench.txt" 2>&1 || echo "exit $?" >> "$tmp/bench.txt"
    { echo "== bench --device cuda --arch $*"; cat "$tmp/bench.txt"; } >> "$log"
    echo "bench --arch $*: $(grep -E "^(engine|speedup|exit)" "$tmp/bench.txt" | tr '\n' ' ')"
  done
  local toml
  toml=$("$py" -c 'import digitpairs_examples, os; print(os.path.dirname(digitpairs_examples.__file__))')/examples.toml
  { time timeout 200 "$py" -m digitpairs run "$toml" --device cuda --store "$tmp/own.sqlite" --out "$tmp/own" \
      > "$tmp/own.log" 2>&1; echo "exit $?" > "$tmp/own.rc"; } 2> "$tmp/own.time"
  { echo "== the example study on the GPU: $(cat "$tmp/own.rc"), whole command $(cat "$tmp/own.time")"
    tr '\r' '\n' < "$tmp/own.log" | grep -E "^(residual|mlp|transfer|ws_bn)|batched|one round|runs: 100%" | sort -u
    cat "$tmp/own/table.md" 2>/dev/null; grep -iE "claim|holds|confirmed" "$tmp/own/report.md" 2>/dev/null | head -4
  } >> "$log"
  mkdir -p "$tmp/gated"
  cat > "$tmp/gated/gated.py" <<'PY'
from torch import nn

from digitpairs import Arch, register_arch


class Gated(nn.Module):
    """Reads a value back to the host in its forward: vmap cannot take it."""

    def __init__(self, size):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Dropout(0.2), nn.Linear(8 * ((size - 2) // 2) ** 2, 10))

    def forward(self, x):
        y = self.body(x)
        return y if y.abs().sum().item() >= 0 else -y


@register_arch
def gated_ws_aux():
    return Arch("gated_ws_aux", "Gated WS,AUX", objective="comparison+digits", branch=Gated)
PY
  printf 'name = "gated"\nrounds = 3\nplugins = ["gated.py"]\narchs = ["gated_ws_aux"]\n' > "$tmp/gated/gated.toml"
  echo "== a plugin vmap cannot take, on the GPU: run --quick, then predict from its kept model" >> "$log"
  (cd "$tmp/gated" && timeout 120 "$py" -m digitpairs run gated.toml --quick --device cuda --store g.sqlite --out g \
     2>&1 | tr '\r' '\n' | grep -E "gated_ws_aux|^exit|Error|error" | sort -u; echo "exit ${PIPESTATUS[0]}"
   "$py" -c "from PIL import Image; import numpy as np; [Image.fromarray((np.random.default_rng(i).random((28, 28)) * 255).astype('uint8')).save(f'{i}.png') for i in (1, 2)]"
   timeout 60 "$py" -m digitpairs predict 1.png 2.png --store g.sqlite 2>&1 | tail -3; echo "exit ${PIPESTATUS[0]}") >> "$log"
  for size in 28 14; do  # this machine's CPU, as a 2-core session machine would be
    OMP_NUM_THREADS=2 timeout 100 $(command -v taskset > /dev/null && echo taskset -c 0,1) "$py" -m digitpairs bench \
      --device cpu --arch residual_ws_aux --size $size --epochs 3 --rounds 6 > "$tmp/bench.txt" 2>&1 || echo "exit $?" >> "$tmp/bench.txt"
    { echo "== bench --device cpu --arch residual_ws_aux --size $size, taskset -c 0,1, 2 threads"
      cat "$tmp/bench.txt"; } >> "$log"
    echo "cpu bench $size: $(grep -E "^(speedup|exit)" "$tmp/bench.txt")"
  done
  grep -E "passed|failed|error" "$log" | head -3
}

[ "$part" = own ] || builtin
[ "$part" = builtin ] || own
rm -rf "$tmp"
echo "total $SECONDS s"
