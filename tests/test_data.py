"""Data loading, splits and reshaping; bad files get clear DataErrors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedl import data
from edgedl.core.errors import DataError, UsageError


def test_builtin_digits_are_real_and_split_without_overlap():
    ds = data.load_dataset("digits", seed=0)
    assert ds.sample_shape == (28, 28, 1)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (3600, 400, 1000)
    # raw pixels stay raw until a model is known; the source says how they usually scale
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255 and ds.natural_scale == 1 / 255
    assert ds.task == "classification" and ds.kind == "image"
    assert np.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    train_rows = {row.tobytes() for row in ds.x_train}
    assert not any(row.tobytes() in train_rows for row in ds.x_test)


def test_split_is_seeded():
    a, b, c = (data.load_dataset("digits8x8", seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


@pytest.mark.parametrize("shape, expected", [((784,), (5, 784)), ((28, 28), (5, 28, 28)), ((28, 28, 1), (5, 28, 28, 1))])
def test_fit_to_input_maps_images_to_each_architecture(shape, expected):
    x = np.zeros((5, 28, 28, 1), np.float32)
    assert data.fit_to_input(x, shape).shape == expected


def test_fit_to_input_refuses_wrong_size():
    with pytest.raises(DataError, match="expects"):
        data.fit_to_input(np.zeros((2, 8, 8, 1), np.float32), (28, 28))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(n=60):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 255, (n, 6, 6), dtype=np.uint8), "y_train": np.arange(n) % 3}


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.pop("y_train"), "lacks y_train"),
    (lambda a: a.update(x_train=a["x_train"].astype(object)), "object arrays"),
    (lambda a: a.update(y_train=np.full(60, -1)), "labels out of range"),
    (lambda a: a.update(x_train=np.where(np.arange(60 * 36).reshape(60, 6, 6) == 7, np.nan, 1.0)), "NaN"),
    (lambda a: a.update(y_train=np.arange(59)), "60 samples but 59 labels"),
    (lambda a: a.update(x_train=np.array(["a"] * 60)), "numeric"),
    (lambda a: a.update(x_test=a["x_train"][:5]), "only one of x_test/y_test"),
    (lambda a: a.update(x_test=np.zeros((5, 4, 4)), y_test=np.zeros(5)), "x_test samples are"),
])
def test_bad_npz(tmp_path, mutate, message):
    arrays = _good()
    mutate(arrays)
    with pytest.raises(DataError, match=message):
        data.load_dataset(_npz(tmp_path / "d.npz", **arrays))


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load_dataset(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="not found"):
        data.load_dataset(tmp_path / "missing.npz")
    with pytest.raises(UsageError, match="unknown dataset"):
        data.load_dataset("no-such-builtin")


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    ds = data.load_dataset(tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.sample_shape == (9, 9, 1)
    assert len(ds.y_test) == 4


def test_calibration_never_comes_from_test_split():
    ds = data.load_dataset("digits8x8")
    calib, idx = data.calibration_subset(ds.x_train, 50, seed=0)
    assert np.array_equal(calib, ds.x_train[idx]) and len(calib) == 50


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 40), classes=st.integers(2, 5), features=st.integers(1, 6), seed=st.integers(0, 99))
def test_npz_loader_properties(tmp_path_factory, n, classes, features, seed):
    """Any .npz either splits into disjoint parts covering every sample, or gets a clean DataError."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, classes, n)
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, x_train=x, y_train=y)
    try:
        ds = data.load_dataset(path, seed=seed)
    except DataError as exc:
        assert "too few" in str(exc) or "two classes" in str(exc)
        return
    total = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert total == n
    assert sorted(np.concatenate([ds.y_train, ds.y_val, ds.y_test]).tolist()) == sorted(y.tolist())
    assert ds.x_train.dtype == np.float32


def test_preprocessing_is_decided_with_a_reason_and_never_silently():
    facts = {"rescaling": None, "integer_input": False}
    pixels = data.decide_preprocessing(np.uint8, 1 / 255, facts)
    assert pixels["scale"] == pytest.approx(1 / 255) and "no Rescaling layer" in pixels["reason"]
    inside = data.decide_preprocessing(np.uint8, 1 / 255, {**facts, "rescaling": "rescaling"})
    assert inside["scale"] == 1.0 and "scales its own input (layer 'rescaling')" in inside["reason"]
    tokens = data.decide_preprocessing(np.int32, 1.0, {**facts, "integer_input": True})
    assert tokens["scale"] == 1.0 and "token ids" in tokens["reason"]
    declared = data.decide_preprocessing(np.uint8, 1 / 255, facts, declared={"scale": 2.0, "offset": -1.0})
    assert (declared["scale"], declared["offset"]) == (2.0, -1.0) and "declared" in declared["reason"]
    recorded = {"scale": 1 / 16, "offset": 0.0}
    assert data.decide_preprocessing(np.uint8, 1 / 255, facts, recorded=recorded)["scale"] == 1 / 16
    # float data against a run recorded for raw pixels: already scaled, fed as given (then range-checked)
    assert data.decide_preprocessing(np.float32, 1.0, facts, recorded=recorded)["scale"] == 1.0


def test_a_range_mismatch_stops_with_the_numbers():
    reference = [0.0, 1.0]
    data.check_range(np.random.default_rng(0).random((50, 4)), reference, "calibration", "training")
    with pytest.raises(DataError, match=r"spans \[0.88\d*, 254.2\] but training spans \[0, 1\] \(253× the range\)"):
        data.check_range(np.random.default_rng(0).random((50, 4)) * 255, reference, "calibration", "training")
    with pytest.raises(DataError, match="scaled differently"):
        data.check_range(np.random.default_rng(0).random((50, 4)) / 255, reference, "calibration", "training")
    data.check_range(np.arange(10, dtype=np.int32), reference, "tokens", "training")  # ids are not scaled


def test_regression_targets_and_sample_kinds():
    assert data.infer_task(np.array([0, 1, 2])) == "classification"
    assert data.infer_task(np.array([0.5, 1.25])) == "regression"
    assert data.infer_task(np.eye(3)) == "classification"  # one-hot rows
    assert data.sample_kind(np.zeros((2, 16, 32), np.float32)) == "sequence"
    assert data.sample_kind(np.zeros((2, 8, 8), np.uint8)) == "image"
    assert data.sample_kind(np.zeros((2, 20), np.int32)) == "tokens"
    assert data.sample_kind(np.zeros((2, 5), np.float32)) == "vector"
