"""launch/: a real Flower deployment on 127.0.0.1, TLS and SuperNode authentication on.

Every process is started by the launch scripts, bounded in time, and stopped by its PID
(``launch/stop.sh``) whatever the outcome.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedlr.analysis import is_round, read_log

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
BIN = str(Path(sys.executable).parent)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("openssl") and shutil.which("ssh-keygen")),
        reason="launch/certs.sh needs openssl and ssh-keygen",
    ),
]


def free_port() -> int:
    """A port free now, with the next 20 free too (SuperNodes use port + 10 + i)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 60000 and all(_free(port + k) for k in range(1, 21)):
            return port
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def env(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        FLWR_HOME=str(tmp_path / "flwr-home"),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    )


def sh(*args: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_node_keys_come_from_cryptography_without_ssh_keygen(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    certs = tmp_path / "certs"
    environment = env(tmp_path) | {"FEDLR_KEYGEN": "python"}  # as on a machine without openssh
    done = subprocess.run(
        ["bash", str(LAUNCH / "certs.sh"), str(certs), "1"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key = serialization.load_ssh_private_key((certs / "node-0").read_bytes(), None)
    assert key.curve.name == "secp384r1"
    public = (certs / "node-0.pub").read_text()
    assert public.startswith("ecdsa-sha2-nistp384 ") and public.endswith(" fedlr-node-0\n")
    assert (certs / "node-0").stat().st_mode & 0o077 == 0


def test_certs_are_made_once_and_kept(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    first = sh(str(LAUNCH / "certs.sh"), str(certs), "2", "node.example", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    files = ["ca.crt", "ca.key", "server.pem", "server.key", "node-0", "node-0.pub", "node-1"]
    before = {name: (certs / name).read_bytes() for name in files}
    again = sh(str(LAUNCH / "certs.sh"), str(certs), "2", tmp_path=tmp_path)
    assert again.returncode == 0 and "keeping existing" in again.stdout
    assert {name: (certs / name).read_bytes() for name in files} == before  # never overwritten
    text = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "server.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text and "node.example" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (certs / "node-1.pub").read_text().startswith("ecdsa-sha2-nistp384 ")


def run_local_cluster(
    tmp_path: Path, nodes: int, config: str, extra_env: dict[str, str] | None = None
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``launch/local-cluster.sh NODES CONFIG`` into ``tmp_path/cluster``, then stop.sh."""
    run = tmp_path / "cluster"
    environment = env(tmp_path) | {"FEDLR_LAUNCH_DIR": str(run), "FEDLR_PORT": str(free_port())}
    try:
        done = subprocess.run(
            ["bash", str(LAUNCH / "local-cluster.sh"), str(nodes), config],
            env=environment | (extra_env or {}),
            capture_output=True,
            text=True,
            timeout=480,
            check=False,
            cwd=ROOT,
        )
    finally:
        sh(str(LAUNCH / "stop.sh"), str(run), tmp_path=tmp_path)
    return run, done


def local_cluster(
    tmp_path: Path, nodes: int, config: str, extra_env: dict[str, str] | None = None
) -> tuple[Path, str, dict]:
    """``launch/local-cluster.sh NODES CONFIG`` (TLS and node auth on), then stop.sh.

    Checks that it succeeded over TLS and left a complete run directory; returns the launch
    folder, the script's stdout and the run's ``results.json``.
    """
    run, done = run_local_cluster(tmp_path, nodes, config, extra_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--insecure" not in (run / "superlink.log").read_text()
    # a launch folder used before may hold a failed run's directory: this run's has results
    (run_dir,) = [d for d in (run / "runs").iterdir() if (d / "results.json").exists()]
    for name in ("config.toml", "rounds.jsonl", "results.json", "report.md"):
        assert (run_dir / name).stat().st_size > 0, name
    return run, done.stdout, json.loads((run_dir / "results.json").read_text())


def test_local_cluster_fails_loudly_then_multi_gpu_reruns_in_the_same_folder(
    tmp_path: Path,
) -> None:
    # A ServerApp that fails (a model that cannot be imported): `flwr run` itself exits 0, the
    # script asks the SuperLink and exits 1, naming the status and the logs.
    run, failed = run_local_cluster(tmp_path, 2, "model='no_such_module:make' num-server-rounds=1")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "the run ended as finished:failed" in failed.stderr
    assert "flwr-run.log" in failed.stderr and "local-cluster: done" not in failed.stdout
    # Owner-only: the SuperLink's database and the launch folder's logs and keys.
    for path in (run / "superlink.db", run / "superlink.log", run / "certs" / "node-0"):
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    # The same launch folder again, now as launch/multi-gpu.sh on two GPUs: certificates kept,
    # keys registered already; the defaults' noise counts scale down to 2 nodes (8 noisy of 10
    # would not fit). No GPU is needed: CUDA_VISIBLE_DEVICES is only handed on, torch then
    # trains on the CPU; each SuperNode's is read from /proc while it runs.
    environment = env(tmp_path) | {"FEDLR_LAUNCH_DIR": str(run), "FEDLR_PORT": str(free_port())}
    script = subprocess.Popen(
        [
            "bash",
            str(LAUNCH / "multi-gpu.sh"),
            *("--gpus", "0,1", "num-server-rounds=1 strategies='noise-adaptive'"),
        ],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 240
        seen = {
            node: _environ_of_supernode(
                run / "pids" / f"supernode-{node}.pid", deadline, script
            ).get("CUDA_VISIBLE_DEVICES")
            for node in (0, 1)
        }
        output, _ = script.communicate(timeout=420)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        sh(str(LAUNCH / "stop.sh"), str(run), tmp_path=tmp_path)
    assert script.returncode == 0, output[-3000:]
    assert seen == {0: "0", 1: "1"}
    assert "-> 2 SuperNodes" in output and "CUDA_VISIBLE_DEVICES=1" in output
    assert "keeping existing" in output
    assert "--insecure" not in (run / "superlink.log").read_text()
    # the failed run's directory may be there too: this run's has results
    (run_dir,) = [d for d in (run / "runs").iterdir() if (d / "results.json").exists()]
    assert "noisy-clients = 1\n" in (run_dir / "config.toml").read_text()
    assert run_dir.stat().st_mode & 0o077 == 0
    results = json.loads((run_dir / "results.json").read_text())
    clients = results["strategies"]["noise-adaptive"]["clients"]
    assert [c["partition_id"] for c in clients] == [0, 1]
    assert all(0 <= c["accuracy"] <= 1 for c in clients)
    rounds = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    assert [r["round"] for r in rounds] == [1]
    assert not list((run / "pids").glob("*.pid"))  # stop.sh removed every PID file it stopped


HEART = ROOT.parent / "shared" / "data" / "heart_disease"


@pytest.mark.skipif(not HEART.is_dir(), reason="../shared/data/heart_disease is not here")
def test_each_supernode_reads_its_own_hospital_file_over_tls(tmp_path: Path) -> None:
    """Four SuperNodes, each on one hospital's CSV, and a fifth whose file lacks the label.

    The server holds no data: it learns features and classes from the sites' statistics. The
    bad node's error is kept under ``errors`` and the run goes on with the four hospitals.
    """
    bad = tmp_path / "bad.csv"
    bad.write_text("age,sex\n50,1\n60,0\n")
    sites = sorted(HEART.glob("*.csv"))
    config = (
        "num-server-rounds=1 dataset='csv' label-column='disease' model='linear' "
        "categorical-columns='cp,restecg,slope,thal' strategies='fedavg' "
        "metrics='accuracy,auroc' round-timeout=120"
    )
    node_data = ",".join(str(p) for p in [*sites, bad])
    _, stdout, results = local_cluster(tmp_path, 5, config, {"FEDLR_NODE_DATA": node_data})
    lines = [line for line in stdout.splitlines() if line.startswith("supernode ")]
    for i, site in enumerate([*sites, bad]):  # supernode.sh echoes each node's own file
        assert any(f"supernode {i}: " in line and f"/{site.name}," in line for line in lines)
    (error,) = results["errors"]
    assert error["partition_id"] is None and "label-column" in error["reason"]
    clients = results["strategies"]["fedavg"]["clients"]
    assert [c["partition_id"] for c in clients] == [0, 1, 2, 3]
    # each node trained on its own file: the train splits of 303, 294, 123 and 200 patients
    assert [c["num_examples"] for c in clients] == [227, 220, 92, 150]
    assert all(0 <= c["accuracy"] <= 1 for c in clients)
    assert all("noise_true" not in c or c["noise_true"] is None for c in clients)


class Cluster:
    """A SuperLink with TLS and node auth on a free port, started by the launch scripts.

    ``flwr`` commands reach it as the connection ``t`` (FLWR_HOME under ``tmp_path``); nodes
    are added with :meth:`add_node`; :meth:`stop` stops every PID the scripts recorded.
    """

    def __init__(self, tmp_path: Path, nodes: int) -> None:
        self.tmp_path, self.nodes = tmp_path, nodes
        self.run, self.certs, self.port = tmp_path / "run", tmp_path / "certs", free_port()
        home = tmp_path / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "t"\n\n[superlink.t]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs / "ca.crt"}"\n'
        )
        made = sh(str(LAUNCH / "certs.sh"), str(self.certs), str(nodes), tmp_path=tmp_path)
        assert made.returncode == 0, made.stderr

    def start(self) -> None:
        started = sh(
            str(LAUNCH / "superlink.sh"),
            str(self.run),
            "--certs",
            str(self.certs),
            "--port",
            str(self.port),
            tmp_path=self.tmp_path,
        )
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 30
        while not _listening(self.port):
            assert time.monotonic() < deadline, (self.run / "superlink.log").read_text()[-2000:]
            time.sleep(0.2)

    def flwr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [f"{BIN}/flwr", *args],
            env=env(self.tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def add_node(self, partition_id: int, *, register: bool = True) -> int:
        """Register node ``partition_id``'s key (unless told not to), start it, return its PID."""
        if register:
            done = self.flwr(
                "supernode", "register", str(self.certs / f"node-{partition_id}.pub"), "t"
            )
            assert done.returncode == 0, done.stdout + done.stderr
        node = sh(
            str(LAUNCH / "supernode.sh"),
            str(self.run),
            str(partition_id),
            str(self.nodes),
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--certs",
            str(self.certs),
            "--port",
            str(self.port + 10 + partition_id),
            tmp_path=self.tmp_path,
        )
        assert node.returncode == 0, node.stderr
        return int((self.run / "pids" / f"supernode-{partition_id}.pid").read_text())

    def stop(self) -> None:
        sh(str(LAUNCH / "stop.sh"), str(self.run), tmp_path=self.tmp_path)


def test_unregistered_supernode_is_refused(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, nodes=2)
    try:
        cluster.start()
        member = cluster.add_node(0)
        stranger = cluster.add_node(1, register=False)  # node-1's key was never registered
        deadline = time.monotonic() + 60
        while alive(stranger) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive(stranger), "an unregistered SuperNode is still running"
        assert "Failed to activate SuperNode" in (cluster.run / "supernode-1.log").read_text()
        assert alive(member)
        listed = cluster.flwr("supernode", "ls", "t", "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert listed.stdout.count('"online"') == 1, listed.stdout
    finally:
        cluster.stop()
    assert not alive(member)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_killed_supernode_is_recorded_missing_and_rejoins_when_restarted(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, nodes=3)
    out = tmp_path / "runs"
    flwr_run = None
    try:
        cluster.start()
        victim = [cluster.add_node(pid) for pid in range(3)][2]
        config = (
            f"num-clients=3 noisy-clients=1 hard-clean-clients=0 num-server-rounds=4 "
            f"strategies='fedavg' min-clients=2 round-timeout=60 out-dir='{out}'"
        )
        flwr_run = subprocess.Popen(
            [f"{BIN}/flwr", "run", str(ROOT), "t", "--stream", "--run-config", config],
            env=env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def wait_for_round(n: int) -> None:
            deadline = time.monotonic() + 240
            while len(rounds_of(out)) < n:
                assert time.monotonic() < deadline and flwr_run.poll() is None, f"no round {n}"
                time.sleep(0.2)

        wait_for_round(1)  # then kill well before round 2's ClientApp (a new process) replies
        os.killpg(victim, 9)  # the SuperNode dies mid-run, ClientApps and all
        # Restarted during round 2, the node could still fetch round 2's message and reply
        # before the round's timeout (it did on a loaded machine): restart it after round 2.
        wait_for_round(2)
        # Flower lets the same key (so the same node id) back in once the SuperLink has marked
        # the dead connection offline: two missed heartbeats of 30 s (flwr.common.constant).
        deadline = time.monotonic() + 150
        while (
            cluster.flwr("supernode", "ls", "t", "--format", "json").stdout.count('"online"') != 2
        ):
            assert time.monotonic() < deadline and flwr_run.poll() is None, "never offline"
            time.sleep(2)
        cluster.add_node(2, register=False)  # restarted with its registered key
        output, _ = flwr_run.communicate(timeout=420)
    finally:
        if flwr_run is not None and flwr_run.poll() is None:
            flwr_run.kill()
        cluster.stop()
    rounds = rounds_of(out)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4], output[-3000:]
    missing = [r["missing"] for r in rounds]
    assert missing[0] == [] and missing[1] == [2], missing
    assert missing[-1] == [], missing  # back in the last round at the latest
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["strategies"]["fedavg"]["fairness"]["mean"] > 0


def rounds_of(out: Path) -> list[dict]:
    """The round lines of the one run under ``out`` (none before it has started)."""
    logs = list(out.glob("*/rounds.jsonl"))
    if not logs:
        return []
    return [x for x in read_log(logs[0]) if is_round(x)]


def _environ_of_supernode(
    pid_file: Path, deadline: float, script: subprocess.Popen[str]
) -> dict[str, str]:
    """The environment ``flower-supernode`` was started with (once it has replaced the shell)."""
    while True:
        assert time.monotonic() < deadline, f"{pid_file} never named a running flower-supernode"
        assert script.poll() is None, f"the launch script ended before {pid_file.name} was read"
        try:
            pid = int(pid_file.read_text())
            if b"flower-supernode" in Path(f"/proc/{pid}/cmdline").read_bytes():
                raw = Path(f"/proc/{pid}/environ").read_text()
                pairs = (item.partition("=") for item in raw.split("\0"))
                return {key: value for key, _, value in pairs if key}
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/PID/environ")
def test_multi_gpu_without_gpus_is_a_clear_exit_2(tmp_path: Path) -> None:
    no_gpu = tmp_path / "bin"
    no_gpu.mkdir()
    (no_gpu / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (no_gpu / "nvidia-smi").chmod(0o755)
    environment = env(tmp_path) | {"PATH": f"{no_gpu}{os.pathsep}{env(tmp_path)['PATH']}"}
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(
        ["bash", str(LAUNCH / "multi-gpu.sh"), "num-server-rounds=1"],
        env=environment | {"FEDLR_LAUNCH_DIR": str(tmp_path / "never")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "multi-gpu.sh: no GPU found (nvidia-smi lists none); name them with --gpus 0,1,..."
    ]
    assert not (tmp_path / "never").exists()  # nothing was started


SHIM = """#!{python}
import json, os, socket, sys, time
tool = os.path.basename(sys.argv[0])
record = {{"tool": tool, "argv": sys.argv[1:], "pid": os.getpid(),
          "node": os.environ.get("SLURMD_NODENAME"),
          "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
{body}
"""
SHIM_BODIES = {
    "scontrol": 'print("\\n".join(os.environ["FAKE_HOSTS"].split(",")))',
    # srun runs its command here, as if on the --nodelist node (SLURMD_NODENAME set to it)
    "srun": (
        "args = sys.argv[1:]\n"
        "while args[0].startswith('-'):\n"
        "    args.pop(0)\n"
        "node = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--nodelist='))\n"
        "env = dict(os.environ, SLURMD_NODENAME=node)\n"
        "env.pop('CUDA_VISIBLE_DEVICES', None)\n"
        "os.execvpe(args[0], args, env)"
    ),
    "flower-superlink": (
        "server = socket.socket()\n"
        "server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "server.bind(('127.0.0.1', int(sys.argv[sys.argv.index('--port') + 1])))\n"
        "server.listen()\n"
        "time.sleep(120)"
    ),
    "flower-supernode": "time.sleep(120)",
    # `flwr run` returns once every SuperNode has started, as a real run needs them all
    "flwr": (
        "if sys.argv[1] == 'ls':\n"
        "    status = os.environ.get('FAKE_STATUS', 'finished:completed')\n"
        "    print(json.dumps({'runs': [{'run-id': '1', 'status': status, 'pending-at': 't'}]}))\n"
        "    sys.exit(0)\n"
        "deadline = time.monotonic() + 30\n"
        "while sys.argv[1] == 'run' and open(os.environ['FAKE_LOG']).read().count(\n"
        "        '\"flower-supernode\"') < int(os.environ['FAKE_SUPERNODES']):\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit('fake flwr run: SuperNodes missing')\n"
        "    time.sleep(0.1)"
    ),
}


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _sbatch(tmp_path: Path, **extra_env: str):
    """Run fedlr.sbatch on fake SLURM and Flower tools; return (the result, the tools' calls)."""
    shims, log, run = tmp_path / "shims", tmp_path / "calls.jsonl", tmp_path / "run"
    shims.mkdir()
    for tool, body in SHIM_BODIES.items():
        (shims / tool).write_text(SHIM.format(python=sys.executable, body=body))
        (shims / tool).chmod(0o755)
    port = free_port()
    environment = env(tmp_path) | {
        "PATH": f"{shims}{os.pathsep}{env(tmp_path)['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_HOSTS": "gpu01,gpu02,gpu03",
        "FAKE_SUPERNODES": "4",
        # what SLURM sets for `sbatch --nodes=3 --gpus-per-node=2`, in the batch script on gpu01
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[01-03]",
        "SLURM_GPUS_PER_NODE": "2",
        "SLURMD_NODENAME": "gpu01",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "FEDLR_LAUNCH_DIR": str(run),
        "FEDLR_PORT": str(port),
        # gpu01 is no real host here: the SuperLink binds the address given
        "FEDLR_SUPERLINK_BIND": "127.0.0.1",
        **extra_env,
    }
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    calls: list[dict] = []
    try:
        done = subprocess.run(
            [
                "bash",
                str(LAUNCH / "slurm" / "fedlr.sbatch"),
                environment.get("FEDLR_EXTRA", "num-server-rounds=7"),
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
    finally:
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        for call in calls:  # whatever happened, nothing started here outlives the test
            if call["tool"].startswith("flower-") and alive(call["pid"]):
                os.kill(call["pid"], 9)
    return done, calls, port


def test_slurm_sbatch_fails_loudly_when_the_run_fails(tmp_path: Path) -> None:
    done, _, _ = _sbatch(tmp_path, FAKE_STATUS="finished:failed")
    assert done.returncode == 1
    assert "the run ended as finished:failed" in done.stderr
    assert "flwr-run.log" in done.stderr


def test_slurm_sbatch_refuses_a_bad_run_config_before_any_node_starts(tmp_path: Path) -> None:
    done, calls, _ = _sbatch(tmp_path, FEDLR_EXTRA="lr=0")
    assert done.returncode == 2 and "lr: expected a number > 0" in done.stderr, done.stderr
    assert not any(c["tool"] in ("flower-superlink", "flower-supernode") for c in calls)


def test_slurm_sbatch_places_superlink_and_supernodes(tmp_path: Path) -> None:
    done, calls, port = _sbatch(tmp_path)
    run = tmp_path / "run"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_tool: dict[str, list[dict]] = {}
    for call in calls:
        by_tool.setdefault(call["tool"], []).append(call)

    assert [c["argv"] for c in by_tool["scontrol"]] == [["show", "hostnames", "gpu[01-03]"]]
    (superlink,) = by_tool["flower-superlink"]
    assert superlink["node"] == "gpu01"  # the batch script's node: the allocation's first
    argv = superlink["argv"]
    assert _option(argv, "--host") == "127.0.0.1" and _option(argv, "--port") == str(port)
    assert "--enable-supernode-auth" in argv and "--insecure" not in argv
    assert sorted(
        next(a for a in c["argv"] if a.startswith("--nodelist=")) for c in by_tool["srun"]
    ) == ["--nodelist=gpu02", "--nodelist=gpu03"]
    assert all("--gpus-per-node=2" in c["argv"] for c in by_tool["srun"])

    supernodes = set()
    for call in by_tool["flower-supernode"]:
        key = Path(_option(call["argv"], "--auth-supernode-private-key")).name
        node_config = _option(call["argv"], "--node-config")
        superlink_address = _option(call["argv"], "--superlink")
        supernodes.add((call["node"], node_config, call["cuda"], superlink_address, key))
    address = f"gpu01:{port + 1}"  # the gate's port: SuperNodes never dial the SuperLink itself
    assert supernodes == {
        ("gpu02", "partition-id=0 num-partitions=4", "0", address, "node-0"),
        ("gpu02", "partition-id=1 num-partitions=4", "1", address, "node-1"),
        ("gpu03", "partition-id=2 num-partitions=4", "0", address, "node-2"),
        ("gpu03", "partition-id=3 num-partitions=4", "1", address, "node-3"),
    }
    flwr = [c["argv"] for c in by_tool["flwr"]]
    registered = sorted(Path(a[2]).name for a in flwr if a[:2] == ["supernode", "register"])
    assert registered == [f"node-{i}.pub" for i in range(4)]
    (flwr_run,) = [a for a in flwr if a[0] == "run"]
    assert flwr_run[2] == "fedlr-slurm"
    assert _option(flwr_run, "--run-config").startswith("num-clients=4 out-dir=")
    assert _option(flwr_run, "--run-config").endswith(" num-server-rounds=7")
    home = (run / "flwr-home" / "config.toml").read_text()
    assert f'address = "127.0.0.1:{port}"' in home  # flwr runs on the SuperLink's node only
    gate = (run / "gate.log").read_text()
    assert f"gate: 127.0.0.1:{port + 1} -> 127.0.0.1:{port} (Fleet API only)" in gate
    text = subprocess.run(
        ["openssl", "x509", "-in", str(run / "certs" / "server.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:gpu01" in text  # the certificate names the host the SuperNodes dial
    deadline = time.monotonic() + 10
    started = by_tool["flower-superlink"] + by_tool["flower-supernode"]
    while any(alive(c["pid"]) for c in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c["pid"] for c in started if alive(c["pid"])], "left running after the job"
    assert not list(run.glob("**/pids/*.pid"))


def test_gpu_check_refuses_a_machine_without_a_gpu_in_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: launch/gpu-check.sh would run its checks")
    done = sh(str(LAUNCH / "gpu-check.sh"), str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("gpu-check.sh: torch sees no GPU here (CUDA_VISIBLE_DEVICES=")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_stranger_with_only_ca_crt_can_neither_register_a_key_nor_list_runs(
    tmp_path: Path,
) -> None:
    # The SuperLink on 127.0.0.1 only, `fedlr gate` where SuperNodes connect. A stranger holds
    # the public ca.crt and a key of their own, and reaches only the gate.
    certs, run, port = tmp_path / "certs", tmp_path / "run", free_port()
    assert sh(str(LAUNCH / "certs.sh"), str(certs), "1", tmp_path=tmp_path).returncode == 0
    evil = tmp_path / "evil"
    assert sh(str(LAUNCH / "certs.sh"), str(evil), "1", tmp_path=tmp_path).returncode == 0
    started = sh(
        str(LAUNCH / "superlink.sh"), str(run), "--certs", str(certs), "--port", str(port),
        "--gate", f"127.0.0.1:{port + 1}", tmp_path=tmp_path,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr

    def flwr(home: str, address: int, *args: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / home).mkdir(exist_ok=True)
        (tmp_path / home / "config.toml").write_text(
            f'[superlink]\ndefault = "s"\n\n[superlink.s]\naddress = "127.0.0.1:{address}"\n'
            f'root-certificates = "{certs / "ca.crt"}"\n'
        )
        environment = env(tmp_path) | {"FLWR_HOME": str(tmp_path / home)}
        return subprocess.run(
            ["flwr", *args], env=environment, capture_output=True, text=True, timeout=60
        )

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = []
            for p in (port, port + 1):
                with socket.socket() as probe:
                    up.append(probe.connect_ex(("127.0.0.1", p)) == 0)
            if all(up):
                break
            time.sleep(0.3)
        stranger_key = str(evil / "node-0.pub")
        registered = flwr("stranger", port + 1, "supernode", "register", stranger_key, "s")
        assert registered.returncode != 0, registered.stdout
        listed = flwr("stranger", port + 1, "ls", "s", "--format", "json")
        assert listed.returncode != 0 or '"success": false' in listed.stdout, listed.stdout
        gate_log = (run / "gate.log").read_text()
        assert "gate: refused POST '/v1/control/register-node'" in gate_log
        assert "gate: refused POST '/v1/control/list-runs'" in gate_log
        # on the SuperLink's own host the operator still can: it was the gate that said no
        own = flwr("operator", port, "supernode", "register", str(certs / "node-0.pub"), "s")
        assert own.returncode == 0, own.stdout + own.stderr
        assert flwr("operator", port, "ls", "s", "--format", "json").returncode == 0
        # and the SuperLink itself answers on 127.0.0.1 only
        pid = (run / "pids" / "superlink.pid").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"
    finally:
        sh(str(LAUNCH / "stop.sh"), str(run), tmp_path=tmp_path)
