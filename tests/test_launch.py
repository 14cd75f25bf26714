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


def test_local_cluster_runs_fedlr_over_tls(tmp_path: Path) -> None:
    run = tmp_path / "cluster"
    port = free_port()
    config = (
        "num-server-rounds=2 noisy-clients=1 hard-clean-clients=0 "
        "strategies='noise-adaptive' warmup-rounds=1"
    )
    environment = env(tmp_path) | {"FEDLR_LAUNCH_DIR": str(run), "FEDLR_PORT": str(port)}
    try:
        done = subprocess.run(
            ["bash", str(LAUNCH / "local-cluster.sh"), "2", config],
            env=environment,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
            cwd=ROOT,
        )
    finally:
        sh(str(LAUNCH / "stop.sh"), str(run), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--insecure" not in (run / "superlink.log").read_text()
    (run_dir,) = (run / "runs").iterdir()
    for name in ("config.toml", "rounds.jsonl", "results.json", "report.md"):
        assert (run_dir / name).stat().st_size > 0, name
    results = json.loads((run_dir / "results.json").read_text())
    clients = results["strategies"]["noise-adaptive"]["clients"]
    assert [c["partition_id"] for c in clients] == [0, 1]
    assert all(0 <= c["accuracy"] <= 1 for c in clients)
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert not list((run / "pids").glob("*.pid"))  # stop.sh removed every PID file it stopped


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


def test_killed_supernode_is_recorded_missing_and_the_run_finishes(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, nodes=3)
    out = tmp_path / "runs"
    flwr_run = None
    try:
        cluster.start()
        victim = [cluster.add_node(pid) for pid in range(3)][2]
        config = (
            f"num-clients=3 noisy-clients=1 hard-clean-clients=0 num-server-rounds=3 "
            f"strategies='fedavg' min-clients=2 round-timeout=20 out-dir='{out}'"
        )
        flwr_run = subprocess.Popen(
            [f"{BIN}/flwr", "run", str(ROOT), "t", "--stream", "--run-config", config],
            env=env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 240
        while not list(out.glob("*/rounds.jsonl")) or not (
            next(out.glob("*/rounds.jsonl")).read_text().strip()
        ):
            assert time.monotonic() < deadline and flwr_run.poll() is None, "round 1 never ended"
            time.sleep(0.2)  # kill well before round 2's ClientApp (a new process) can reply
        os.killpg(victim, 9)  # the SuperNode dies mid-run, ClientApps and all
        output, _ = flwr_run.communicate(timeout=420)
    finally:
        if flwr_run is not None and flwr_run.poll() is None:
            flwr_run.kill()
        cluster.stop()
    (run_dir,) = out.iterdir()
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3], output[-3000:]
    assert rounds[0]["missing"] == []
    assert all(r["missing"] == [2] for r in rounds[1:]), [r["missing"] for r in rounds]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["strategies"]["fedavg"]["fairness"]["mean"] > 0
