"""The Ray backend: a real two-node cluster that lives on loopback only, an instance of the command's own that an
interrupt ends, and the CPUs each task declares.

The cluster runs in its own network namespace (unshare) whose only interface is loopback, so that the head, the
second node, the driver and every worker bind to and talk to 127.0.0.1 and nothing else; a PID namespace makes
sure that no process of it outlives the test."""

import ipaddress
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support import run_cli

pytest.importorskip("ray", reason="Ray is not installed here (the extra digitpairs[ray])")

LOOPBACK = (ipaddress.ip_address("127.0.0.1"),)
NAMESPACE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]

CLUSTER = r"""
set -euo pipefail
export RAY_USAGE_STATS_ENABLED=0 PATH="$(dirname "$PY"):$PATH"
"$PY" - <<'UP'
import fcntl, socket, struct  # bring loopback up in this namespace (it starts down), without iproute2
s = socket.socket()
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]  # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
UP
ray start --head --node-ip-address 127.0.0.1 --port 6379 --num-cpus 1 --include-dashboard=false \
  --disable-usage-stats --temp-dir "$TMP/ray" > "$TMP/head.log" 2>&1
setsid ray start --address 127.0.0.1:6379 --node-ip-address 127.0.0.1 --num-cpus 1 --block \
  --disable-usage-stats > "$TMP/node2.log" 2>&1 &
node2=$!
"$PY" - <<'WAIT'
import time, ray
ray.init(address="127.0.0.1:6379", logging_level="ERROR")
for _ in range(120):
    if sum(n["Alive"] for n in ray.nodes()) == 2:
        break
    time.sleep(0.5)
else:
    raise SystemExit("the second node did not join")
WAIT
"$PY" -m digitpairs run "$STUDY" --quick --rounds 4 --epochs 6 --backend ray --address 127.0.0.1:6379 --batch-rounds 1 \
  --store "$STORE" --out "$TMP/report" --data-dir "$DATA" > "$TMP/driver.log" 2>&1 &
driver=$!
NODE2=$node2 "$PY" - <<'KILL'
import os, signal, time


def node2():  # {pid: title} of the second node's processes: the session its `ray start` leads
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            session = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[3])
            title = open(f"/proc/{pid}/cmdline", "rb").read()
        except (OSError, IndexError, ValueError):
            continue
        if session == int(os.environ["NODE2"]):
            out[int(pid)] = title
    return out


for _ in range(3000):  # until a unit trains there (Ray titles a busy worker ray::FUNCTION), then kill them all
    procs = node2()
    if any(t.startswith(b"ray::ray_unit") for t in procs.values()):
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended in between, e.g. a worker with its raylet (and was reaped)
                pass
        break
    time.sleep(0.1)
else:
    raise SystemExit("no unit ever ran on the second node")
KILL
echo "killed node 2"
status=0
wait "$driver" || status=$?
"$PY" - <<'LISTEN' > "$TMP/listening.txt"
import ipaddress  # the local address of every listening TCP socket in this namespace (state 0A)
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(name).read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            raw = bytes.fromhex(local.split(":")[0])
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # kernel byte order per word
            print(ipaddress.ip_address(words))
LISTEN
ray stop --force > /dev/null 2>&1 || true
exit $status
"""


def namespace_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        [*NAMESPACE, "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.slow
def test_a_study_survives_losing_a_node_of_a_loopback_ray_cluster(tmp_path, real_data_dir):
    if not namespace_works():
        pytest.skip("no network namespace here (unshare): the cluster would not be confined to loopback")
    short = Path(tempfile.mkdtemp(prefix="dpray"))  # Ray's socket paths must stay short
    study = tmp_path / "study.toml"
    study.write_text('archs = ["siamese_ws", "siamese_ws_aux", "siamese_ws_aux_bn"]\n')
    store = tmp_path / "runs.sqlite"
    env = {"PY": sys.executable, "TMP": str(short), "STUDY": str(study), "STORE": str(store),
           "DATA": str(real_data_dir), "HOME": str(short), "LANG": "C.UTF-8"}
    try:
        p = subprocess.run([*NAMESPACE, "bash", "-c", CLUSTER], env=env, capture_output=True, text=True,
                           timeout=500, check=False)
        logs = {f.name: f.read_text() for f in short.glob("*.log")}
        tails = "\n".join(f"--- {name} (end) ---\n{text[-2000:]}"
                          for name, text in {"stdout": p.stdout, "stderr": p.stderr, **logs}.items())
        if p.returncode != 0:  # pytest.fail: its message is shown whole, where an assert's is cut short
            pytest.fail(f"the cluster script failed (exit {p.returncode}):\n{tails}")
        assert "killed node 2" in p.stdout
        assert "resubmitted" in logs["driver.log"]  # a unit was lost with the node and trained again
        assert "Local node IP: 127.0.0.1" in logs["head.log"] and "Local node IP: 127.0.0.1" in logs["node2.log"]
        listening = [ipaddress.ip_address(a) for a in (short / "listening.txt").read_text().split()]
        assert listening and all(a.is_loopback or getattr(a, "ipv4_mapped", None) in LOOPBACK for a in listening)
        db = sqlite3.connect(store)
        rows = db.execute("SELECT arch, round, COUNT(*) FROM runs GROUP BY arch, round").fetchall()
        assert len(rows) == 3 * 4 and all(n == 1 for *_, n in rows)  # every run of the study, once
        assert db.execute("SELECT COUNT(*) FROM curves").fetchone()[0] == 3 * 4 * 6  # 6 epochs each
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.slow
def test_ray_tasks_declare_one_cpu_unless_threads_is_given(tmp_path, real_data_dir, monkeypatch):
    from digitpairs.runner import study as study_module
    from digitpairs.runner.study import run_study
    from digitpairs.spec.studyfile import build
    from digitpairs.store import Store

    asked = []

    def backend(variants, data_dir, threads, address, log):
        asked.append(threads)

    monkeypatch.setattr(study_module, "RayBackend", backend)
    monkeypatch.setattr(study_module, "dispatch", lambda drv, backend: None)
    study = build({"archs": ["siamese_ws"], "rounds": 2}, "ray.toml", quick=True)
    store = Store(tmp_path / "s.sqlite")
    run_study(study, store, real_data_dir, workers=4, backend="ray")
    run_study(study, store, real_data_dir, workers=4, threads=3, backend="ray")
    assert asked == [1, 3]


@pytest.mark.slow
def test_a_task_that_no_node_can_hold_is_refused_before_submission(tmp_path, real_data_dir):
    store = tmp_path / "s.sqlite"
    p = run_cli("reproduce", "--quick", "--archs", "siamese_ws", "--backend", "ray", "--threads", "64", "--store",
                store, "--out", tmp_path / "out", "--data-dir", real_data_dir, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert "--threads 64: no node of the Ray cluster has that many CPUs" in last and "Traceback" not in p.stderr
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_ends_a_ray_study_within_5_s_and_its_ray_instance_with_it(tmp_path, real_data_dir, sig, code):
    from tests.support import interrupt, start

    proc = start([sys.executable, "-m", "digitpairs", "reproduce", "--quick", "--archs",
                  "siamese_ws,siamese_ws_aux_bn", "--rounds", "15", "--epochs", "3", "--batch-rounds", "3",
                  "--backend", "ray", "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"),
                  "--data-dir", str(real_data_dir)])
    logged = interrupt(proc, sig, code, settle=1)  # below it: Ray's GCS, raylet, agents and workers
    stored = set(sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT arch, round FROM runs").fetchall())
    assert logged and logged <= stored


@pytest.mark.slow
def test_a_study_that_asks_for_gpus_from_a_cluster_without_them_is_refused(tmp_path, real_data_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a Ray instance started here has this machine's GPU")
    p = run_cli("reproduce", "--quick", "--archs", "siamese_ws", "--backend", "ray", "--device", "cuda", "--store",
                tmp_path / "s.sqlite", "--out", tmp_path / "out", "--data-dir", real_data_dir, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert "the Ray cluster has no GPU" in last and "Traceback" not in p.stderr
