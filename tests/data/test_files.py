"""Users' own tables: reading, checks, the sites' agreement, encoding, and the config around it."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedlr.config import ConfigError, resolve
from fedlr.data import files
from fedlr.data.federated import build_federation

HEART = files.DEFAULT_DATA_DIR / "heart_disease"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def two_sites(tmp_path: Path) -> str:
    """Site a: x in {0, 2, 4, 6, ?}, colour red/blue; site b: x in {10, 20, ?, 30}, green."""
    write(
        tmp_path / "a.csv",
        "x,colour,label\n0,red,0\n2,blue,1\n4,red,0\n6,blue,1\n,red,0\n8,red,1\n",
    )
    write(
        tmp_path / "b.csv",
        "x,colour,label\n10,green,1\n20,green,1\n,green,0\n30,green,0\n40,green,1\n",
    )
    return str(tmp_path / "*.csv")


def cfg_for(spec: str, **extra) -> dict:
    overrides = {"dataset": "csv", "data-files": spec, "categorical-columns": "colour"}
    overrides.update(extra)
    return resolve(overrides=overrides)


def test_files_make_one_client_each_in_sorted_order_and_inject_nothing(tmp_path):
    cfg = cfg_for(two_sites(tmp_path))
    assert cfg["num-clients"] == 2
    assert cfg["noisy-clients"] == 0 and cfg["hard-clean-clients"] == 0
    assert "oracle-noise-rates" not in cfg["strategies"]
    fed = build_federation(cfg)
    assert [c.site for c in fed.clients] == ["a.csv", "b.csv"]
    assert [c.role for c in fed.clients] == [None, None]
    assert [c.flip_fraction for c in fed.clients] == [None, None]
    assert fed.num_classes == 2 and fed.classes == (0, 1)
    # x (1 column) + colour one-hot over the agreed categories blue, green, red
    assert fed.num_features == 4
    for client in fed.clients:
        np.testing.assert_array_equal(client.y_train, client.y_train_clean)


def test_pooled_statistics_are_the_moments_of_every_sites_train_values(tmp_path):
    cfg = cfg_for(two_sites(tmp_path))
    sites = [
        files.split_site(name, frame, cfg, pid)
        for pid, (name, frame) in enumerate(files.site_frames(cfg))
    ]
    stats = [files.site_statistics(site) for site in sites]
    agreement = files.agree(stats, ["x"])
    present = pd.concat([s.train["x"] for s in sites]).dropna().to_numpy()
    assert agreement.mean["x"] == pytest.approx(present.mean())
    assert agreement.std["x"] == pytest.approx(present.std())  # population std, ddof 0
    assert agreement.categories == {"colour": ["blue", "green", "red"]}
    assert agreement.classes == [0, 1]


def test_missing_values_are_imputed_with_the_pooled_mean_then_standardised(tmp_path):
    cfg = cfg_for(two_sites(tmp_path), **{"test-fraction": 0.2})
    fed = build_federation(cfg)
    sites = [
        files.split_site(name, frame, cfg, pid)
        for pid, (name, frame) in enumerate(files.site_frames(cfg))
    ]
    agreement = files.agree([files.site_statistics(s) for s in sites], ["x"])
    mean, std = agreement.mean["x"], agreement.std["x"]
    for site, client in zip(sites, fed.clients, strict=True):
        raw = site.train["x"].to_numpy(float)
        expected = np.where(np.isnan(raw), 0.0, (raw - mean) / std)  # pooled mean -> z = 0
        np.testing.assert_allclose(client.x_train[:, 0], expected, rtol=1e-6, atol=1e-6)
        colours = site.train["colour"].tolist()
        one_hot = client.x_train[:, 1:]
        for row, colour in zip(one_hot, colours, strict=True):
            assert row.tolist() == [float(colour == c) for c in ("blue", "green", "red")]


def test_site_standardisation_uses_each_sites_own_moments(tmp_path):
    cfg = cfg_for(two_sites(tmp_path), standardize="site")
    fed = build_federation(cfg)
    for client in fed.clients:
        x = client.x_train[:, 0]
        # imputed with the site's own mean: the column is z-scored to mean 0 (std 1 or less)
        assert abs(float(x.mean())) < 1e-6


def test_standardize_none_keeps_raw_values(tmp_path):
    cfg = cfg_for(two_sites(tmp_path), standardize="none")
    fed = build_federation(cfg)
    raw = set(fed.clients[0].x_train[:, 0].tolist())
    assert raw & {0.0, 2.0, 4.0, 6.0, 8.0}


def test_site_column_makes_one_client_per_value(tmp_path):
    write(
        tmp_path / "all.csv",
        "hospital,x,label\nzurich,1,0\nbasel,2,1\nzurich,3,1\nbasel,4,0\nzurich,5,0\n"
        "basel,6,1\nzurich,7,1\nbasel,8,0\n",
    )
    cfg = resolve(
        overrides={
            "dataset": "csv",
            "data-files": str(tmp_path / "all.csv"),
            "site-column": "hospital",
        }
    )
    assert cfg["num-clients"] == 2
    fed = build_federation(cfg)
    assert [c.site for c in fed.clients] == ["all.csv:basel", "all.csv:zurich"]
    assert fed.num_features == 1  # the site column is not a feature


def test_parquet_files_read_like_csv(tmp_path):
    for name, offset in (("a", 0), ("b", 10)):
        frame = pd.DataFrame({"x": np.arange(8.0) + offset, "label": ["no", "yes"] * 4})
        frame.to_parquet(tmp_path / f"{name}.parquet")
    cfg = resolve(overrides={"dataset": "parquet", "data-files": str(tmp_path / "*.parquet")})
    fed = build_federation(cfg)
    assert fed.classes == ("no", "yes")
    assert sum(c.num_train + c.num_test for c in fed.clients) == 16


def test_classes_are_the_union_over_sites(tmp_path):
    write(tmp_path / "a.csv", "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    write(tmp_path / "b.csv", "x,label\n" + "".join(f"{i},{1 + i % 2}\n" for i in range(8)))
    fed = build_federation(
        resolve(overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv")})
    )
    assert fed.classes == (0, 1, 2)
    assert set(fed.clients[1].y_test.tolist()) | set(fed.clients[1].y_train.tolist()) == {1, 2}


def test_split_is_stratified_and_seeded(tmp_path):
    rows = "".join(f"{i},{int(i < 32)}\n" for i in range(40))  # 32 positives, 8 negatives
    write(tmp_path / "a.csv", "x,label\n" + rows)
    write(tmp_path / "b.csv", "x,label\n" + rows)
    cfg = resolve(overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv")})
    fed = build_federation(cfg)
    client = fed.clients[0]
    assert client.num_test == math.ceil(0.25 * 40)
    assert int(client.y_test.sum()) == 8  # stratified: 80% of the 10 test rows
    again = build_federation(cfg)
    np.testing.assert_array_equal(again.clients[0].x_train, client.x_train)
    other = build_federation({**cfg, "seed": 1})
    assert not np.array_equal(other.clients[0].x_train, client.x_train)


def test_injected_noise_still_works_on_files_and_brings_truth(tmp_path):
    rows = "".join(f"{i},{i % 2}\n" for i in range(40))
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.csv", "x,label\n" + rows)
    cfg = resolve(
        overrides={
            "dataset": "csv",
            "data-files": str(tmp_path / "*.csv"),
            "noisy-clients": 1,
            "noise-rate-min": 0.9,
            "noise-rate-max": 0.9,
        }
    )
    fed = build_federation(cfg)
    assert [c.role for c in fed.clients] == ["noisy", "clean", "clean"]
    assert fed.clients[0].flip_fraction > 0.2
    assert fed.clients[1].flip_fraction == 0.0
    # the sites to make noisy can be chosen (one cached federation must not serve the other)
    from fedlr.tasks import tabular

    assert [c.role for c in tabular.federation(cfg).clients][0] == "noisy"
    fed = tabular.federation({**cfg, "noisy-client-ids": "2"})  # cached by the data keys
    assert [c.role for c in fed.clients] == ["clean", "clean", "noisy"]
    assert fed.clients[2].flip_fraction > 0.2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data-files": "{tmp}/nothing-*.csv"}, "data-files: no file matches"),
        ({"data-files": "{tmp}/absent.csv,{tmp}/a.csv"}, "data-files: file not found"),
        ({"data-files": "{tmp}/a.csv"}, "one file ("),
        (
            {"data-files": "{tmp}/*.csv", "label-column": "y"},
            "label-column: a.csv has no column 'y'",
        ),
        (
            {"data-files": "{tmp}/*.csv", "categorical-columns": ""},
            "column 'colour' of a.csv is not numeric",
        ),
        (
            {"data-files": "{tmp}/*.csv", "feature-columns": "x,z"},
            "feature-columns: a.csv has no column 'z'",
        ),
        ({"data-files": "{tmp}/*.csv", "num-clients": 3}, "num-clients: data-files holds 2 sites"),
        (
            {"data-files": "{tmp}/*.csv", "hard-clean-clients": 1},
            "hard-clean-clients: a hard-but-clean",
        ),
        (
            {"data-files": "{tmp}/*.csv", "strategies": "oracle-noise-rates"},
            "which real files do not have",
        ),
        ({"data-files": "{tmp}/*.csv", "site-column": "colour"}, "site-column: expected one file"),
    ],
)
def test_bad_files_and_columns_name_what_is_wrong(tmp_path, overrides, message):
    two_sites(tmp_path)
    settings = {"dataset": "csv", "categorical-columns": "colour"}
    settings.update(
        {
            k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
            for k, v in overrides.items()
        }
    )
    with pytest.raises(ConfigError, match=None) as caught:
        build_federation(resolve(overrides=settings))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_empty_unreadable_and_tiny_sites_are_refused(tmp_path):
    write(tmp_path / "a.csv", "")
    write(tmp_path / "b.csv", "x,label\n1,0\n2,1\n")
    with pytest.raises(ConfigError, match="a.csv is empty"):
        files.read_table(tmp_path / "a.csv")
    write(tmp_path / "a.csv", "x,label\n")
    with pytest.raises(ConfigError, match="a.csv has no rows"):
        files.read_table(tmp_path / "a.csv")
    write(tmp_path / "a.csv", "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    with pytest.raises(ConfigError, match="site b.csv has 2 labelled rows; expected at least 3"):
        build_federation(
            resolve(overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv")})
        )
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ConfigError, match="expected a .csv or .parquet file"):
        files.find_files(str(tmp_path / "c.txt"))


def test_a_site_column_with_one_value_is_refused(tmp_path):
    write(tmp_path / "all.csv", "site,x,label\nh,1,0\nh,2,1\nh,3,0\nh,4,1\n")
    with pytest.raises(ConfigError, match="site-column: column 'site' of .* has 1 value"):
        resolve(
            overrides={
                "dataset": "csv",
                "data-files": str(tmp_path / "all.csv"),
                "site-column": "site",
            }
        )


def test_a_site_with_one_class_warns_and_is_kept(tmp_path):
    write(tmp_path / "a.csv", "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    write(tmp_path / "b.csv", "x,label\n" + "".join(f"{i},1\n" for i in range(8)))
    cfg = resolve(overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fed = build_federation(cfg)
    assert any("site b.csv has one class only" in str(w.message) for w in caught)
    assert set(fed.clients[1].y_train.tolist()) == {1}


def test_rows_without_a_label_are_dropped(tmp_path):
    write(tmp_path / "a.csv", "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)) + "9,\n")
    write(tmp_path / "b.csv", "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    fed = build_federation(
        resolve(overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv")})
    )
    assert fed.clients[0].num_train + fed.clients[0].num_test == 8


def test_data_dir_placeholder_expands_to_the_env_or_default(monkeypatch, tmp_path):
    monkeypatch.setenv(files.DATA_ENV, str(tmp_path))
    assert files.expand("$FEDLR_DATA_DIR/x/*.csv") == f"{tmp_path}/x/*.csv"
    monkeypatch.delenv(files.DATA_ENV)
    with pytest.raises(ConfigError, match=r"FEDLR_DATA_DIR = .*the default"):
        files.find_files("$FEDLR_DATA_DIR/no-such-folder/*.csv")


@pytest.mark.skipif(not HEART.is_dir(), reason="../shared/data/heart_disease is not here")
def test_the_four_heart_disease_hospitals():
    cfg = resolve(Path(__file__).parents[2] / "simulations" / "heart_disease.toml")
    assert cfg["num-clients"] == 4
    fed = build_federation(cfg)
    assert [c.site for c in fed.clients] == [
        "cleveland.csv",
        "hungarian.csv",
        "switzerland.csv",
        "va.csv",
    ]
    assert [c.num_train + c.num_test for c in fed.clients] == [303, 294, 123, 200]
    assert fed.classes == (0, 1)
    # Switzerland is 93% positive, Hungary 36% (the data's README); stratified splits keep that
    assert np.mean(fed.clients[2].y_test) == pytest.approx(0.93, abs=0.03)
    assert np.mean(fed.clients[1].y_test) == pytest.approx(0.36, abs=0.03)
    for client in fed.clients:
        assert np.isfinite(client.x_train).all() and np.isfinite(client.x_test).all()


def test_cli_prints_one_line_and_exits_2_for_a_missing_file(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedlr.cli",
            "simulate",
            "--set",
            "dataset=csv",
            "--set",
            f"data-files={tmp_path}/absent.csv",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "data-files: file not found" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("a_csv", "message"),
    [
        ("x,x,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", "names column 'x' more than once"),
        (" x,x,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", "names column 'x' more than once"),
        ("x,label\n1,0\ninf,1\n3,0\n4,1\n", "column 'x' of a.csv holds"),
        ("x,label\n1,0.5\n2,1.5\n3,0.5\n4,1.5\n", "expected class labels"),
    ],
)
def test_repeated_columns_infinite_values_and_continuous_labels_are_refused(
    tmp_path, a_csv, message
):
    write(tmp_path / "a.csv", a_csv)
    write(tmp_path / "b.csv", "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(8)))
    with pytest.raises(ConfigError) as caught:
        build_federation(
            resolve(overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv")})
        )
    assert message in str(caught.value)


def test_rows_without_a_site_are_dropped_and_logged(tmp_path, caplog):
    write(
        tmp_path / "all.csv",
        "site,x,label\n"
        + "".join(f"{'ab'[i % 2]},{i},{i // 2 % 2}\n" for i in range(16))
        + ",99,1\n,98,0\n",
    )
    with caplog.at_level("WARNING", logger="fedlr"):
        fed = build_federation(
            resolve(
                overrides={
                    "dataset": "csv",
                    "data-files": str(tmp_path / "all.csv"),
                    "site-column": "site",
                }
            )
        )
    assert "2 rows without a site value dropped" in caplog.text
    assert sum(c.num_train + c.num_test for c in fed.clients) == 16


def test_a_split_too_small_to_stratify_falls_back_to_a_plain_seeded_split(tmp_path):
    rows = "x,label\n" + "".join(f"{i},{i % 4}\n" for i in range(8))  # 4 classes, 2 rows each
    write(tmp_path / "a.csv", rows)
    write(tmp_path / "b.csv", rows)
    cfg = resolve(
        overrides={"dataset": "csv", "data-files": str(tmp_path / "*.csv"), "test-fraction": 0.7}
    )
    fed = build_federation(cfg)  # 2 train rows cannot hold 4 classes: no stratification
    assert [c.num_train for c in fed.clients] == [2, 2]
