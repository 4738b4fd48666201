"""Datasets, loaders and preprocessing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ct_core.config import ConfigError, DataConfig
from ct_core.constraints import BOTH, DECREASE, INCREASE, NONE, infer_domain
from ct_core.data import clear_cache, feature_names, load_dataset
from ct_core.data.download import DataError, DataFile, Source, fetch, locate
from ct_core.data.preprocess import stratified_split
from ct_core.data.tabular import ADULT_LEVELS

DATA = Path(os.environ["CT_DATA_DIR"])
SYNTHETIC = {"lin_sep": 2, "over": 2, "moons": 2, "circles": 2, "gaussm": 10}


def load(name: str, **kw) -> object:
    return load_dataset(DataConfig(name=name, **kw))


@pytest.fixture(scope="module")
def adult():
    return load("adult")


@pytest.fixture(scope="module")
def mnist():
    return load("mnist")


def assert_disjoint_rows(a: torch.Tensor, b: torch.Tensor) -> None:
    sa = {tuple(r) for r in a.tolist()}
    assert not any(tuple(r) in sa for r in b.tolist())


# ---------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("rng", ["julia", "numpy"])
@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_sets_have_the_papers_sizes_dims_and_balanced_classes(name, rng):
    ds = load(name, rng=rng)
    assert ds.X_train.shape == (3000, SYNTHETIC[name]) and ds.X_train.dtype == torch.float32
    assert ds.X_val.shape == (600, SYNTHETIC[name]) and ds.y_val.dtype == torch.int64
    assert ds.X_test.shape == (900, SYNTHETIC[name])
    assert ds.n_classes == 2 and ds.batch_size == 30 and ds.categorical == []
    assert ds.feature_names == feature_names(DataConfig(name=name))
    assert ds.feature_names[0] == "x1"
    for y in (ds.y_train, ds.y_val, ds.y_test):
        share = y.float().mean().item()
        assert 0.42 < share < 0.58  # drawn from 50 000 + 50 000 points
    # validation keeps the class ratio of train+val (to within one point)
    n1 = ds.y_train.sum() + ds.y_val.sum()
    assert abs(ds.y_val.sum().item() - 600 * n1.item() / 3600) <= 1
    assert_disjoint_rows(ds.X_train, ds.X_test)
    assert_disjoint_rows(ds.X_val, ds.X_test)


@pytest.mark.parametrize("name", list(SYNTHETIC))
@pytest.mark.parametrize("n, seed", [(1001, 0), (4000, 42)])
def test_synthetic_generators_draw_exactly_what_scikit_learn_draws(name, n, seed):
    from sklearn.datasets import make_blobs, make_circles, make_moons

    from ct_core.data.synthetic import MOONS_YSHIFT, generate

    x, y = generate(name, n, seed)
    if name == "moons":
        xs, ys = make_moons(n_samples=n, noise=0.1, random_state=seed)
        xs[ys == 1, 1] += MOONS_YSHIFT - 0.5
    elif name == "circles":
        xs, ys = make_circles(n_samples=n, noise=0.15, factor=0.01, random_state=seed)
        ys = 1 - ys
    else:
        std = {"lin_sep": 0.5, "over": 2.0, "gaussm": 0.5}[name]
        xs, ys = make_blobs(
            n_samples=n, n_features=SYNTHETIC[name], centers=2, cluster_std=std, random_state=seed
        )
    assert x.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(y, ys)


def test_julia_is_the_default_stream_and_numpy_an_option_with_other_points():
    from ct_core.data.synthetic import generate_julia

    assert DataConfig(name="moons").rng == "julia"
    jl, npy = load("over"), load("over", rng="numpy")
    assert not torch.equal(jl.X_test, npy.X_test)
    # the test set is the last 900 of Julia's randperm(Xoshiro(2025), 100_000)
    from ct_core.data.julia_rng import Xoshiro

    x, y = generate_julia("over", 100_000, 42)
    test = Xoshiro(2025).randperm(100_000)[-900:]
    assert torch.equal(jl.X_test, torch.tensor(x[test], dtype=torch.float32))
    assert torch.equal(jl.y_test, torch.tensor(y[test]))
    from ct_core.config import parse_config

    with pytest.raises(ConfigError, match="data.rng"):
        parse_config({"data": {"name": "over", "rng": "mt19937"}})


def test_julia_points_are_cached_once_and_read_back_unchanged(tmp_path, monkeypatch):
    from ct_core.data.synthetic import synthetic_splits

    monkeypatch.setenv("CT_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(name="circles")
    first = synthetic_splits(cfg, 300, 60, 90)
    assert len(list((tmp_path / "synthetic").glob("*.npz"))) == 1
    again = synthetic_splits(cfg, 300, 60, 90)
    for part in ("train", "val", "test"):
        assert np.array_equal(first[part][0], again[part][0])
        assert np.array_equal(first[part][1], again[part][1])


def test_synthetic_data_is_not_standardised_unless_asked():
    raw = load("lin_sep")
    assert raw.X_train.abs().mean() > 1.5  # blob centres lie in (-10, 10)
    std = load("lin_sep", standardize=True)
    assert torch.allclose(std.X_train.mean(0), torch.zeros(2), atol=1e-4)


@pytest.mark.parametrize("rng", ["julia", "numpy"])
def test_moons_follow_mljbase_shifts_and_circles_put_the_inner_point_in_class_0(rng):
    m = load("moons", rng=rng)
    x = torch.cat([m.X_train, m.X_val])
    y = torch.cat([m.y_train, m.y_val])
    lower = x[y == 1]  # (cos θ + 1, -sin θ + 0.3) + noise
    assert abs(lower[:, 0].mean().item() - 1.0) < 0.05
    assert abs(lower[:, 1].mean().item() - (0.3 - 2 / np.pi)) < 0.03
    upper = x[y == 0]
    assert abs(upper[:, 1].mean().item() - 2 / np.pi) < 0.03
    c = load("circles", rng=rng)
    radius = c.X_train.norm(dim=1)
    assert radius[c.y_train == 0].mean() < 0.3 < radius[c.y_train == 1].mean()


def test_sizes_in_the_config_override_the_paper_defaults():
    ds = load("moons", n_train=100, n_val=20, n_test=50)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (100, 20, 50)


def test_same_seed_gives_identical_tensors_and_another_seed_different_ones():
    a = load("over", n_train=200, n_val=50, n_test=50)
    clear_cache()
    b = load("over", n_train=200, n_val=50, n_test=50)
    assert a is not b
    for part in ("train", "val", "test"):
        assert torch.equal(a.split(part)[0], b.split(part)[0])
        assert torch.equal(a.split(part)[1], b.split(part)[1])
    c = load("over", n_train=200, n_val=50, n_test=50, seed=7)
    assert not torch.equal(a.X_train, c.X_train)
    d = load("over", n_train=200, n_val=50, n_test=50, split_seed=7)
    assert not torch.equal(a.X_test, d.X_test)


def test_load_dataset_is_memoised_per_config():
    a = load("circles", n_train=100, n_val=10, n_test=10)
    assert load("circles", n_train=100, n_val=10, n_test=10) is a
    assert load("circles", n_train=100, n_val=10, n_test=11) is not a


def test_stratified_split_is_exact_and_keeps_order_and_ratios():
    y = np.array([0] * 70 + [1] * 30)
    tr, va = stratified_split(y, 15, np.random.default_rng(0))
    assert len(va) == 15 and len(tr) == 85
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(100))
    assert abs((y[va] == 1).sum() - 4.5) <= 0.5


# ---------------------------------------------------------------------------------- tabular


@pytest.mark.parametrize(
    "name, d, n_test",
    [("california", 8, 4126), ("credit", 33, 2654), ("gmsc", 10, 3343)],
)
def test_tabular_sets_have_the_papers_sizes(name, d, n_test):
    ds = load(name)
    n_train = {"california": 15504, "credit": 9617, "gmsc": 12371}[name]
    assert ds.X_train.shape == (n_train, d)
    assert ds.X_val.shape == (1000, d) and ds.X_test.shape == (n_test, d)
    assert ds.batch_size == 1000 and ds.n_classes == 2
    assert 0.45 < ds.y_train.float().mean().item() < 0.55  # balanced Taija CSVs


def test_tabular_split_keeps_csv_order_first_rows_train_last_rows_test():
    ds = load("gmsc")
    raw = pd.read_csv(DATA / "gmsc/taija/gmsc.csv")
    assert torch.equal(ds.y_test, torch.tensor(raw["target"].to_numpy()[-3343:]))
    y_trval = raw["target"].to_numpy()[: 12371 + 1000]
    assert sorted(torch.cat([ds.y_train, ds.y_val]).tolist()) == sorted(y_trval.tolist())


def test_standardisation_uses_only_the_training_part():
    ds = load("california")
    raw = pd.read_csv(DATA / "california_housing/taija/cal_housing.csv").drop(columns="target")
    trval = raw.to_numpy()[:16504]
    mu, sd = trval.mean(0), trval.std(0, ddof=1)
    x = torch.cat([ds.X_train, ds.X_val]).double()
    assert torch.allclose(x.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(8, dtype=torch.float64), atol=1e-4)
    expected_test = (raw.to_numpy()[-4126:] - mu) / sd
    assert np.allclose(ds.X_test.double().numpy(), expected_test, atol=1e-4)
    assert not np.allclose(ds.X_test.double().numpy().mean(0), 0, atol=1e-3)


def test_credit_one_hots_in_place_so_age_is_index_14():
    ds = load("credit")
    assert ds.feature_names.index("AGE") == 14  # paper: feature 15 (1-based)
    assert ds.categorical_groups == [[1, 2], list(range(3, 10)), list(range(10, 14))]
    assert ds.feature_names[1:3] == ["SEX=1", "SEX=2"]
    assert ds.categorical == list(range(1, 14))
    for group in ds.categorical_groups:
        block = torch.cat([ds.X_train, ds.X_test])[:, group]
        assert set(block.unique().tolist()) <= {0.0, 1.0}  # one-hot columns are not z-scored
        assert (block.sum(1) == 1).all()


def test_adult_has_108_features_and_matches_the_taija_recipe(adult):
    assert adult.X_train.shape == (25049, 108)
    assert adult.X_test.shape == (6512, 108)
    assert adult.class_names == ["<=50K", ">50K"]
    assert len(adult.categorical_groups) == 8 and len(adult.categorical) == 102
    assert adult.feature_names[0] == "age"
    # The one-hot levels decode to the codes of the reconstructed Taija adult.csv.
    recon = pd.read_csv(DATA / "adult/taija_reconstructed/adult.csv")
    codes = recon["Workclass"].to_numpy()[-6512:]
    group = adult.categorical_groups[0]
    levels = [adult.feature_names[i].split("=", 1)[1] for i in group]
    decoded = [levels[i] for i in adult.X_test[:, group].argmax(1).tolist()]
    assert decoded == [ADULT_LEVELS["workclass"][c] for c in codes]
    assert torch.equal(adult.y_test, torch.tensor(recon["target"].to_numpy()[-6512:]))


# ---------------------------------------------------------------------------------- MNIST


def test_mnist_is_a_balanced_subsample_scaled_to_minus_one_one(mnist):
    assert mnist.X_train.shape == (10000, 784) and mnist.X_val.shape == (1000, 784)
    assert mnist.X_test.shape == (10000, 784)
    assert mnist.y_train.bincount().tolist() == [1000] * 10
    assert mnist.y_val.bincount().tolist() == [100] * 10
    assert mnist.image_shape == (1, 28, 28) and mnist.n_classes == 10
    assert mnist.X_train.min() == -1.0 and mnist.X_train.max() == 1.0
    lo, hi = mnist.domain
    assert (lo == -1).all() and (hi == 1).all()
    assert mnist.y_test.bincount().tolist()[:3] == [980, 1135, 1032]  # the full test set
    # with replacement: 11 000 draws from ~6 000 images per digit repeat some images
    x = torch.cat([mnist.X_train, mnist.X_val])
    assert len(torch.unique(x, dim=0)) < len(x)


def test_mnist_protected_rows_resolve_by_index():
    ds = load("mnist", n_train=100, n_val=10, n_test=10, immutable=[*range(140), *range(644, 784)])
    assert (ds.mutability == NONE).sum() == 280
    assert ds.mutability[140:644].eq(BOTH).all()
    assert feature_names(DataConfig(name="mnist"))[:2] == ["pixel1", "pixel2"]


# ---------------------------------------------------------------------------------- domain


def test_inferred_domain_contains_train_and_val_and_honours_nsd():
    ds2 = load("gmsc")
    ds3 = load("gmsc", domain_nsd=3.0)
    x = torch.cat([ds2.X_train, ds2.X_val])
    lo, hi = ds2.domain
    assert (x >= lo).all() and (x <= hi).all()
    exp_lo, exp_hi = infer_domain(x, 2.0)
    assert torch.allclose(lo, exp_lo) and torch.allclose(hi, exp_hi)
    lo3, hi3 = ds3.domain
    assert (lo3 <= lo).all() and (hi3 >= hi).all() and ((lo3 < lo) | (hi3 > hi)).any()


def test_domain_none_explicit_and_per_feature():
    assert load("moons", domain="none").domain is None
    lo, hi = load("moons", domain=[-3.0, 3.0]).domain
    assert lo.tolist() == [-3.0, -3.0] and hi.tolist() == [3.0, 3.0]
    lo, hi = load("moons", domain=[[-1.0, 2.0], [-0.5, 1.0]]).domain
    assert lo.tolist() == [-1.0, -0.5] and hi.tolist() == [2.0, 1.0]
    with pytest.raises(ConfigError, match="data.domain"):
        load("gaussm", domain=[[-1.0, 2.0], [-0.5, 1.0]])


def test_unclamped_categoricals_get_an_unbounded_domain():
    ds = load("credit", clamp_categorical=False)
    lo, hi = ds.domain
    assert torch.isinf(lo[1:14]).all() and torch.isinf(hi[1:14]).all()
    assert torch.isfinite(lo[[0, 14]]).all()
    lo_c, _ = load("credit").domain
    assert torch.isfinite(lo_c).all()


# ---------------------------------------------------------------------------------- mutability


def test_mutability_by_name_index_and_categorical_group():
    ds = load("credit", immutable=["AGE", "SEX"], increase_only=[0], decrease_only=["PAY_0"])
    m = ds.mutability
    assert m.shape == (33,) and m.dtype == torch.int8
    assert m[14] == NONE and m[1] == NONE and m[2] == NONE
    assert m[0] == INCREASE and m[ds.feature_names.index("PAY_0")] == DECREASE
    assert (m == BOTH).sum() == 33 - 5
    assert load("gmsc", immutable=[1]).mutability[1] == NONE
    assert load("gmsc", immutable=["age"]).mutability.tolist() == [0, 3] + [0] * 8


@pytest.mark.parametrize("field", ["immutable", "increase_only", "decrease_only"])
def test_unknown_feature_names_are_config_errors_naming_the_field(field):
    with pytest.raises(ConfigError, match=f"data.{field}.*'Age'"):
        load("gmsc", **{field: ["Age"]})


# ---------------------------------------------------------------------------------- user data


def _user_frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.array(["high", "low", "mid"])[np.arange(n) % 3]
    return pd.DataFrame(
        {
            "income": rng.normal(50, 10, n) + (y == "high") * 30,
            "city": np.array(["Delft", "Oslo"])[rng.integers(0, 2, n)],
            "age": rng.integers(18, 80, n),
            "label": y,
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_user_table_with_three_string_classes_and_a_categorical(tmp_path, suffix):
    df = _user_frame()
    path = tmp_path / f"people{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    ds = load("csv", path=str(path), target="label", categorical=["city"])
    assert ds.class_names == ["high", "low", "mid"] and ds.n_classes == 3
    assert ds.feature_names == ["income", "city=Delft", "city=Oslo", "age"]
    assert ds.categorical_groups == [[1, 2]]
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (180, 60, 60)
    assert set(ds.y_train.tolist()) == {0, 1, 2}
    assert torch.allclose(ds.X_train[:, [0, 3]].mean(0), torch.zeros(2), atol=1e-5)
    assert set(ds.X_train[:, 1].unique().tolist()) <= {0.0, 1.0}
    assert ds.batch_size == 64
    # labels survive the round trip: "high" rows have the larger (standardised) income
    assert ds.X_train[ds.y_train == 0, 0].mean() > ds.X_train[ds.y_train == 1, 0].mean()
    ds2 = load("csv", path=str(path), target="label", categorical=["city"], n_train=50, n_val=0)
    assert (len(ds2.y_train), len(ds2.y_val), len(ds2.y_test)) == (50, 0, 60)


def test_user_table_errors_name_the_field(tmp_path):
    path = tmp_path / "d.csv"
    _user_frame(30).to_csv(path, index=False)

    def cfg(**kw):
        base = {"path": str(path), "target": "label", "categorical": ["city"]}
        return load("csv", **{**base, **kw})

    with pytest.raises(ConfigError, match="data.path: file not found"):
        cfg(path=str(tmp_path / "missing.csv"))
    with pytest.raises(ConfigError, match="data.target.*'y'.*income"):
        cfg(target="y")
    with pytest.raises(ConfigError, match="data.categorical.*'town'"):
        cfg(categorical=["town"])
    # a text column is one-hot encoded without being listed
    assert cfg(categorical=[]).feature_names == ["income", "city=Delft", "city=Oslo", "age"]
    one = _user_frame(30).assign(label="x")
    one.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(ConfigError, match="data.target.*at least 2 classes"):
        cfg(path=str(tmp_path / "one.csv"))


# ---------------------------------------------------------------------------------- download


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Serve a folder on 127.0.0.1; yields ``start(folder) -> base URL``; stops the servers."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def fresh_dirs(tmp_path, monkeypatch):
    """Empty CT_DATA_DIR and CT_CACHE_DIR, so every lookup must download."""
    monkeypatch.setenv("CT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CT_DATA_URL", raising=False)
    return tmp_path / "cache"


def test_fetch_verifies_the_checksum_and_writes_atomically(tmp_path, serve):
    (tmp_path / "www").mkdir()
    payload = b"a,b\n1,2\n"
    (tmp_path / "www" / "small.csv").write_bytes(payload)
    base = serve(tmp_path / "www")
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "small.csv"
    fetch(f"{base}/small.csv", dest, good)
    assert dest.read_bytes() == payload
    bad_dest = tmp_path / "out" / "other.csv"
    with pytest.raises(DataError, match="checksum mismatch") as e:
        fetch(f"{base}/small.csv", bad_dest, "0" * 64)
    assert f"{base}/small.csv" in str(e.value) and "CT_DATA_DIR" in str(e.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.csv"]  # no leftovers


def test_locate_downloads_an_archive_member_into_the_cache(tmp_path, serve, fresh_dirs):
    (tmp_path / "www").mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("bundle/small.csv")
        info.size = 8
        t.addfile(info, io.BytesIO(b"x,y\n3,4\n"))
    (tmp_path / "www" / "bundle.tar.gz").write_bytes(buf.getvalue())
    base = serve(tmp_path / "www")
    f = DataFile(
        "toy/small.csv",
        source=Source(
            f"{base}/bundle.tar.gz", hashlib.sha256(buf.getvalue()).hexdigest(), "bundle/small.csv"
        ),
    )
    path = locate(f)
    assert path == fresh_dirs / "toy/small.csv" and path.read_bytes() == b"x,y\n3,4\n"


def test_dataset_downloads_from_a_mirror_then_uses_the_cache(serve, fresh_dirs, monkeypatch):
    clear_cache()
    monkeypatch.setenv("CT_DATA_URL", serve(DATA))
    ds = load("gmsc", n_train=100, n_val=10, n_test=10)
    assert (fresh_dirs / "gmsc/taija/gmsc.csv").is_file()
    monkeypatch.setenv("CT_DATA_URL", "http://127.0.0.1:9")  # nothing listens: offline
    clear_cache()
    again = load("gmsc", n_train=100, n_val=10, n_test=10)
    assert torch.equal(ds.X_train, again.X_train)
    clear_cache()


def test_corrupt_mirror_copy_or_offline_gives_a_clear_error(
    tmp_path, serve, fresh_dirs, monkeypatch
):
    www = tmp_path / "www" / "gmsc" / "taija"
    www.mkdir(parents=True)
    (www / "gmsc.csv").write_text("target,age\n1,30\n0,40\n")
    base = serve(tmp_path / "www")
    monkeypatch.setenv("CT_DATA_URL", base)
    clear_cache()
    with pytest.raises(DataError) as e:
        load("gmsc")
    msg = str(e.value)
    assert "gmsc/taija/gmsc.csv" in msg and f"{base}/gmsc/taija/gmsc.csv" in msg
    assert "checksum mismatch" in msg and "CT_DATA_DIR" in msg
    assert not (fresh_dirs / "gmsc/taija/gmsc.csv").exists()
    monkeypatch.setenv("CT_DATA_URL", "http://127.0.0.1:9")
    with pytest.raises(DataError, match="download failed.*offline.*CT_DATA_DIR"):
        load("gmsc")
    assert isinstance(e.value, ConfigError)  # the CLI reports it like a config problem
    clear_cache()
