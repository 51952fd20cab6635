"""Train each seed model with its default recipe over several seeds; report held-out and outside accuracy.

    python tools/seed_accuracy.py                       # mlp, cnn, lstm × seeds 0, 1, 2
    python tools/seed_accuracy.py --models cnn --seeds 0,1,2,3,4 --out /tmp/acc

Held-out accuracy is on the 1,000 built-in digits the model never trained on (same collection).
Outside accuracy is on a second handwritten-digit collection that ships in a package (see
``outside_digits``), brought to MNIST's format the way MNIST itself was made: the digit's box scaled
to fit 20×20 keeping its aspect, placed in 28×28 with its centre of mass at the centre. It is looked
at once, at the end of training: no setting is chosen by it. Prints a Markdown table for
docs/BENCHMARKS.md and writes the per-run numbers to OUT/seed_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def outside_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """The second collection: uint8 (N, 28, 28) images, white ink on black, labels 0..9, and its name."""
    from sklearn.datasets import load_digits

    bunch = load_digits()  # UCI optical digits: 1,797 8×8 digits of 43 writers, values 0..16
    images = np.stack([mnist_format(image / 16.0) for image in bunch.images])
    return images, bunch.target.astype(np.int64), "scikit-learn load_digits (UCI optdigits, 1,797 digits, 8×8)"


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
    args = parser.parse_args()
    from edgedl.recipe import train_config
    from edgedl.train.fit import train

    images, labels, collection = outside_digits()
    rows = []
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = args.out / f"{name}-{seed}"
            started = time.perf_counter()
            manifest = train(train_config(model=name, seed=seed, out=run), say=lambda m: None)
            wall = time.perf_counter() - started
            row = {"model": name, "seed": seed, "heldout": manifest["metrics"]["test_accuracy"],
                   "outside": outside_accuracy(run, images, labels), "train_s": manifest["training"]["time_s"],
                   "wall_s": round(wall, 1), "epochs_run": manifest["metrics"]["epochs_run"],
                   "settings": {k: manifest["training"][k] for k in
                                ("epochs", "learning_rate", "augment", "label_smoothing", "patience")
                                if k in manifest["training"]}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_accuracy.json").write_text(json.dumps({"outside": collection, "runs": rows}, indent=1))
    print(f"\noutside collection: {collection}\n")
    print("| model | seeds | held-out accuracy, mean (range) | outside accuracy, mean (range) | edgedl train, s (max) |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        mine = [r for r in rows if r["model"] == name]
        print(f"| {name} | {len(mine)} | {_spread([r['heldout'] for r in mine])} | "
              f"{_spread([r['outside'] for r in mine])} | {max(r['wall_s'] for r in mine):.0f} |")


def _spread(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} % ({100 * min(values):.1f}–{100 * max(values):.1f})"


if __name__ == "__main__":
    main()
