"""Users' files on a grid: each node reads only its own site; the server holds no data.

The real ClientApp runs in this process (:class:`InProcessGrid`), as in a deployment where each
SuperNode was started with ``--node-config "data-path='...'"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedlr.config import resolve
from fedlr.data import files
from fedlr.fl import keys
from fedlr.fl.server_app import run_federation

from .conftest import InProcessGrid
from fedlr.analysis import is_round, read_log

HEART = files.DEFAULT_DATA_DIR / "heart_disease"
SITES = sorted(HEART.glob("*.csv"))
pytestmark = pytest.mark.skipif(not HEART.is_dir(), reason="../shared/data/heart_disease absent")

SETTINGS = {
    "dataset": "csv",
    "label-column": "disease",
    "categorical-columns": "cp,restecg,slope,thal",
    "model": "linear",
    "strategies": "fedavg,noise-adaptive",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "batch-size": 8,
    "lr": 0.05,
    "warmup-rounds": 1,
}


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def lines(run_dir: Path) -> list[dict]:
    out = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    for line in out:
        del line["elapsed_s"]
    return out


def test_nodes_on_their_own_files_train_as_the_simulation_does(tmp_path):
    # deployment: the server's config names no file; node i reads hospital i only
    deployed = resolve(overrides={**SETTINGS, "num-clients": 4})
    assert deployed["data-files"] == ""
    grid = InProcessGrid(4, node_configs={i: {keys.DATA_PATH: str(p)} for i, p in enumerate(SITES)})
    run_federation(grid, deployed, tmp_path / "deployed")
    # simulation: every client is site i of data-files
    simulated = resolve(overrides={**SETTINGS, "data-files": str(HEART / "*.csv")})
    run_federation(InProcessGrid(4), simulated, tmp_path / "simulated")
    assert lines(tmp_path / "deployed") == lines(tmp_path / "simulated")
    results = json.loads((tmp_path / "deployed" / "results.json").read_text())
    clients = results["strategies"]["fedavg"]["clients"]
    assert [c["num_examples"] for c in clients] == [227, 220, 92, 150]
    assert "errors" not in results


def test_a_node_with_a_bad_file_is_left_out_and_the_run_goes_on(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("age,sex\n50,1\n60,0\n70,1\n")
    paths = [*SITES[:3], bad]
    cfg = resolve(overrides={**SETTINGS, "num-clients": 4, "strategies": "fedavg"})
    grid = InProcessGrid(4, node_configs={i: {keys.DATA_PATH: str(p)} for i, p in enumerate(paths)})
    run_federation(grid, cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    (error,) = results["errors"]
    assert "label-column" in error["reason"] and "bad.csv" in error["reason"]
    clients = results["strategies"]["fedavg"]["clients"]
    assert [c["partition_id"] for c in clients] == [0, 1, 2]


def statistics_of(path: Path, pid: int) -> str:
    cfg = resolve(overrides={**SETTINGS, "num-clients": 4})
    site = files.own_site(cfg, pid, str(path))
    return files.statistics_to_json(site, files.site_statistics(site))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda d: "not json", "not JSON"),
        (lambda d: {**d, "labels": list(range(5000))}, "labels: expected 1..1000"),
        (lambda d: {**d, "num_train": -3}, "num_train"),
        (lambda d: {**d, "count": {**d["count"], "age": 10**9}}, "count of 'age' out of range"),
        (lambda d: {**d, "total": {**d["total"], "age": float("inf")}}, "Infinity is not a number"),
        (lambda d: {**d, "categories": {**d["categories"], "cp": ["x"] * 2000}}, "categories"),
        (lambda d: {**d, "features": ["a", "b"], "categorical": []}, "expected one value per"),
        (lambda d: json.dumps(d).replace('"labels": [0, 1]', '"labels": [0, 1, NaN]'), "NaN"),
        (lambda d: "[" * 100_000, "not JSON"),
        (lambda d: {**d, "categorical": [[1]]}, "categorical"),
        # one value of 1.7e308 would make the pooled mean overflow every honest site's inputs
        (
            lambda d: {
                **d,
                "count": {**d["count"], "age": 1},
                "total": {**d["total"], "age": 1.7e308},
                "total_sq": {**d["total_sq"], "age": 0.0},
            },
            "not the moments",
        ),
        (lambda d: {**d, "count": {**d["count"], "age": 0}}, "not the moments"),
    ],
)
def test_hostile_statistics_are_left_out_never_averaged_in(tamper, reason):
    honest = {pid: statistics_of(path, pid) for pid, path in enumerate(SITES)}
    baseline, _ = files.agree_from_replies({p: honest[p] for p in (0, 1, 2)})
    bad = tamper(json.loads(honest[3]))
    replies = {**honest, 3: bad if isinstance(bad, str) else json.dumps(bad)}
    agreement, left_out = files.agree_from_replies(replies)
    assert list(left_out) == [3] and reason in left_out[3]
    assert agreement == baseline  # the other three sites' agreement, untouched


def test_a_site_with_other_columns_is_left_out():
    honest = {pid: statistics_of(path, pid) for pid, path in enumerate(SITES)}
    other = json.loads(honest[2])
    other["features"] = ["extra", *other["features"][1:]]  # "age" renamed
    for moment in ("count", "total", "total_sq"):
        other[moment]["extra"] = other[moment].pop("age")
    _, left_out = files.agree_from_replies({**honest, 2: json.dumps(other)})
    assert list(left_out) == [2] and "differ from the other sites'" in left_out[2]


def test_fewer_than_two_usable_sites_is_an_error():
    with pytest.raises(ValueError, match="1 site\\(s\\) usable"):
        files.agree_from_replies({0: statistics_of(SITES[0], 0), 1: "{}"})


class TamperedGrid(InProcessGrid):
    """The real ClientApp on each node, but node ``pid``'s query replies are rewritten."""

    def __init__(self, num_nodes, tamper, pid, **kwargs):
        super().__init__(num_nodes, **kwargs)
        self.tamper, self.pid = tamper, pid

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        for reply in replies:
            is_query = reply.metadata.message_type == "query"
            if is_query and self.partitions[reply.metadata.src_node_id] == self.pid:
                self.tamper(reply)
        return replies


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda r: r.content.metric_records[keys.METRICS].__setitem__(
                keys.PARTITION_ID, float("inf")
            ),
            "malformed query reply",
        ),
        (
            lambda r: r.content.metric_records[keys.METRICS].__setitem__(keys.PARTITION_ID, 0),
            "repeated partition",
        ),
        (
            lambda r: r.content.metric_records[keys.METRICS].__setitem__(
                keys.NUM_EXAMPLES, -(10**9)
            ),
            "training examples",
        ),
    ],
)
def test_a_hostile_node_in_the_query_rounds_is_left_out(tmp_path, tamper, reason):
    paths = {i: {keys.DATA_PATH: str(p)} for i, p in enumerate(SITES)}
    cfg = resolve(
        overrides={**SETTINGS, "num-clients": 4, "strategies": "fedavg", "num-server-rounds": 1}
    )
    run_federation(TamperedGrid(4, tamper, 3, node_configs=paths), cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert any(reason in e["reason"] for e in results["errors"]), results["errors"]
    clients = results["strategies"]["fedavg"]["clients"]
    assert [c["partition_id"] for c in clients] == [0, 1, 2]
