"""Build the models the tests share, once, into tests/models/ (Polygraphy keeps tests/models so).

    python tools/make_test_models.py           # rebuild the stale sets (tiny: ~40 s, zoo: ~50 s on 2 cores)
    python tools/make_test_models.py --check   # exit 1 when either is stale

Each of mlp, cnn, lstm and lstm_seq is trained for 12 epochs on scikit-learn's 8×8 digits and exported to
every format × precision, exactly as the tests' fixtures did on every run. A fingerprint of the code that
makes them (this script, edgedl's train/ and export/ stages, data, subject, the run layout) and of the pinned
dependencies is stored beside them; ``tests/test_subject.py`` fails when it no longer matches, so a change
to how models are trained or exported cannot hide behind stale files.

tests/models/zoo/ holds the users' own models of ``tools/zoo.py`` (MobileNets, a text CNN, recurrent
and Transformer models, …), each a ``.keras`` file with its card and data, as the zoo tests hand
them to edgedl; its fingerprint covers tools/zoo.py and the pinned dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "models" / "tiny"
FINGERPRINT = OUT / "fingerprint.json"
ARCHS = ("mlp", "cnn", "lstm", "lstm_seq")
EPOCHS = 12
# What decides the bytes of these runs and exports (keep in step with what train and export import).
SOURCES = ("tools/make_test_models.py", "pyproject.toml", "edgedl/train", "edgedl/export", "edgedl/data.py",
           "edgedl/subject.py", "edgedl/runners/modelio.py", "edgedl/core/layout.py", "edgedl/core/files.py")


ZOO_OUT = ROOT / "tests" / "models" / "zoo"
ZOO_SOURCES = ("tools/zoo.py", "pyproject.toml")
ZOO_SEED = 0


def fingerprint(sources: tuple = SOURCES) -> str:
    digest = hashlib.sha256()
    for source in sources:
        path = ROOT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _recorded(folder: Path) -> str | None:
    try:
        return json.loads((folder / FINGERPRINT.name).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def is_fresh() -> bool:
    return _recorded(OUT) == fingerprint() and all((OUT / arch / "manifest.json").is_file() for arch in ARCHS)


def zoo_is_fresh() -> bool:
    return _recorded(ZOO_OUT) == fingerprint(ZOO_SOURCES)


def build_zoo(out: Path = ZOO_OUT) -> Path:
    """Build and train every model of tools/zoo.py into ``out`` (replaced whole, or left as it was)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    from tools import zoo

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="zoo-", dir=out.parent))
    try:
        keras.utils.set_random_seed(ZOO_SEED)
        rng = np.random.default_rng(ZOO_SEED)
        for builder in zoo.BUILDERS:
            print(f"building {builder.__name__} …", flush=True)
            builder(staging, rng)
        (staging / FINGERPRINT.name).write_text(json.dumps({"fingerprint": fingerprint(ZOO_SOURCES),
                                                            "seed": ZOO_SEED}, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out}")
    return out


def build(out: Path = OUT) -> Path:
    """Train and export every tiny model into ``out`` (replaced whole, or left as it was)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    from edgedl.api import train
    from edgedl.export import export, plan_targets

    targets, _ = plan_targets(["tflite", "onnx"], ["none", "fp16", "dynamic", "int8"])
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tiny-", dir=out.parent))
    try:
        for arch in ARCHS:
            print(f"training and exporting {arch} …", flush=True)
            train(model=arch, data="digits8x8", epochs=EPOCHS, out=staging / arch, calibration_samples=64, verbose=0)
            export(staging / arch, targets)
        (staging / FINGERPRINT.name).write_text(json.dumps({"fingerprint": fingerprint(), "epochs": EPOCHS,
                                                            "archs": list(ARCHS)}, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)  # whole, or the old set stays
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the models are up to date")
    args = parser.parse_args()
    stale = [name for name, fresh in (("tiny", is_fresh()), ("zoo", zoo_is_fresh())) if not fresh]
    if args.check:
        print(f"stale: {', '.join(stale)}: run python tools/make_test_models.py" if stale else "up to date")
        return 1 if stale else 0
    if not stale:
        print("up to date: nothing to build")
    if "tiny" in stale:
        build()
    if "zoo" in stale:
        build_zoo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
