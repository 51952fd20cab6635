"""Users' own models, built and briefly trained here on small learnable synthetic tasks.

    python tools/zoo.py [FOLDER]     the zoo table of docs/BENCHMARKS.md (every model × target)


The kinds a new user brought: MobileNetV2/V3Small, a text CNN on int32 tokens, Embedding → GRU,
Embedding → Bidirectional(LSTM), a Transformer block (exact GELU, LayerNormalization,
MultiHeadAttention), a functional model with 2 inputs and 2 outputs, a regression net, a conv
autoencoder, and a model with Normalization and Rescaling layers fed raw uint8 pixels. Each is
saved as a ``.keras`` file with a model card and its held-out and calibration data, as a user
would hand them to edgedl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Zoo:
    name: str
    model: Path
    card: Path
    heldout: Path
    calibration: Path
    # what a user would ask for first, and what edgedl must do with it
    targets: tuple = (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


def _fit(model, x, y, loss, epochs=8, lr=3e-3):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


def _recalibrate_batchnorm(model, x):
    """Keras applications keep BatchNormalization momentum at 0.999: after a short fit the moving
    statistics are still near their start. Setting them from a batch makes inference mode sane."""
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x[:128], training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum


def _images(rng, count, size, channels=3):
    """Bright square in one of four quadrants → class 0..3; uint8 pixels."""
    x = rng.integers(0, 60, (count, size, size, channels)).astype(np.uint8)
    y = rng.integers(0, 4, count)
    half = size // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * half : r * half + half, c * half : c * half + half] += 150
    return x, y


def _tokens(rng, count, length=20, vocab=50):
    """Class = which of the marker tokens 1..3 appears most; int32 ids."""
    x = rng.integers(4, vocab, (count, length)).astype(np.int32)
    y = rng.integers(0, 3, count)
    for i, label in enumerate(y):
        x[i, rng.choice(length, 4, replace=False)] = label + 1
    return x, y


def _sequences(rng, count, steps=12, features=8):
    """Class = the feature with the largest mean over time."""
    x = rng.normal(size=(count, steps, features)).astype(np.float32)
    y = rng.integers(0, 4, count)
    x[np.arange(count), :, y] += 1.5
    return x, y


def _save(folder: Path, name: str, model, heldout: dict, calibration: dict, card: str, extra_data: str = "") -> Zoo:
    folder.mkdir(parents=True, exist_ok=True)
    model.compile()  # the trained weights without the optimizer's state: a third of the file, nothing edgedl reads
    model.save(folder / f"{name}.keras")
    np.savez(folder / f"{name}_heldout.npz", **heldout)
    np.savez(folder / f"{name}_calibration.npz", **calibration)
    (folder / f"{name}.card.toml").write_text(
        card + f'\n[data]\nheldout = "{name}_heldout.npz"\ncalibration = "{name}_calibration.npz"\n' + extra_data)
    return Zoo(name, folder / f"{name}.keras", folder / f"{name}.card.toml", folder / f"{name}_heldout.npz",
               folder / f"{name}_calibration.npz")


def load(folder: Path) -> dict[str, Zoo]:
    """The models a build wrote into ``folder`` (each NAME.keras with NAME.card.toml and its data)."""
    names = sorted(card.name.removesuffix(".card.toml") for card in folder.glob("*.card.toml"))
    return {name: Zoo(name, folder / f"{name}.keras", folder / f"{name}.card.toml", folder / f"{name}_heldout.npz",
                      folder / f"{name}_calibration.npz") for name in names}


def mobilenet_v2(folder: Path, rng) -> Zoo:
    import keras

    x, y = _images(rng, 640, 32)
    scaled = x.astype(np.float32) / 127.5 - 1  # MobileNetV2 expects [-1, 1], scaled outside the model
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4)
    _fit(model, scaled[:512], y[:512], "sparse_categorical_crossentropy", epochs=4)
    _recalibrate_batchnorm(model, scaled)
    return _save(folder, "mobilenet_v2", model, {"x": x[512:], "y": y[512:]}, {"x": x[:256]},
                 'task = "classification"\nlabels = ["top-left", "top-right", "bottom-left", "bottom-right"]\n'
                 "[input]\nscale = 0.00784313725490196\noffset = -1.0\n")


def mobilenet_v3(folder: Path, rng) -> Zoo:
    import keras

    x, y = _images(rng, 640, 32)
    # MobileNetV3 rescales its own input (a Rescaling layer inside): it takes raw 0..255 pixels
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=4, minimalistic=True)
    _fit(model, x[:512].astype(np.float32), y[:512], "sparse_categorical_crossentropy", epochs=4)
    _recalibrate_batchnorm(model, x.astype(np.float32))
    return _save(folder, "mobilenet_v3", model, {"x": x[512:], "y": y[512:]}, {"x": x[:256]},
                 'task = "classification"\n')


def text_cnn(folder: Path, rng) -> Zoo:
    import keras

    L = keras.layers
    x, y = _tokens(rng, 600)
    inputs = keras.Input((20,), dtype="int32", name="tokens")
    h = L.Conv1D(32, 3, activation="relu")(L.Embedding(50, 16)(inputs))
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="probs")(L.GlobalMaxPooling1D()(h)))
    _fit(model, x[:500], y[:500], "sparse_categorical_crossentropy")
    return _save(folder, "text_cnn", model, {"x": x[500:], "y": y[500:]}, {"x": x[:200]}, 'task = "classification"\n')


def _recurrent(folder: Path, rng, name: str, layer) -> Zoo:
    import keras

    L = keras.layers
    x, y = _tokens(rng, 600)
    inputs = keras.Input((20,), dtype="int32", name="tokens")
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="probs")(layer(L.Embedding(50, 16)(inputs))))
    _fit(model, x[:500], y[:500], "sparse_categorical_crossentropy", epochs=10)
    return _save(folder, name, model, {"x": x[500:], "y": y[500:]}, {"x": x[:200]}, 'task = "classification"\n')


def gru(folder: Path, rng) -> Zoo:
    import keras

    return _recurrent(folder, rng, "embedding_gru", keras.layers.GRU(16))


def bilstm(folder: Path, rng) -> Zoo:
    import keras

    return _recurrent(folder, rng, "embedding_bilstm", keras.layers.Bidirectional(keras.layers.LSTM(12)))


def transformer(folder: Path, rng) -> Zoo:
    import keras

    L = keras.layers
    x, y = _sequences(rng, 600)
    inputs = keras.Input((12, 8), name="sequence")
    h = L.Dense(16)(inputs)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 8)(h, h))
    h = L.LayerNormalization()(h + L.Dense(16)(L.Dense(32, activation="gelu")(h)))  # exact GELU
    model = keras.Model(inputs, L.Dense(4, activation="softmax", name="probs")(L.GlobalAveragePooling1D()(h)))
    _fit(model, x[:500], y[:500], "sparse_categorical_crossentropy", epochs=10)
    return _save(folder, "transformer", model, {"x": x[500:], "y": y[500:]}, {"x": x[:200]},
                 'task = "classification"\n')


def two_in_two_out(folder: Path, rng) -> Zoo:
    import keras

    L = keras.layers
    count = 600
    meta = rng.normal(size=(count, 6)).astype(np.float32)
    aux = rng.normal(size=(count, 4)).astype(np.float32)
    classes = (meta[:, 0] + aux[:, 0] > 0).astype(np.int64) + (meta[:, 1] > 0.5)
    score = (2 * meta[:, 2] - aux[:, 1] + 0.5).astype(np.float32)
    a, b = keras.Input((6,), name="meta"), keras.Input((4,), name="aux")
    h = L.Dense(32, activation="relu")(L.Concatenate()([a, b]))
    model = keras.Model([a, b], [L.Dense(1, name="score")(h), L.Dense(3, activation="softmax", name="kind")(h)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=["mse", "sparse_categorical_crossentropy"])
    model.fit([meta[:500], aux[:500]], [score[:500], classes[:500]], batch_size=32, epochs=15, verbose=0)
    return _save(folder, "two_in_two_out", model,
                 {"meta": meta[500:], "aux": aux[500:], "y_score": score[500:], "y_kind": classes[500:]},
                 {"meta": meta[:200], "aux": aux[:200]},
                 'labels = ["low", "mid", "high"]\n[outputs.score]\ntask = "regression"\n'
                 '[outputs.kind]\ntask = "classification"\n')


def autoencoder(folder: Path, rng) -> Zoo:
    import keras

    L = keras.layers
    x, _ = _images(rng, 400, 16, channels=1)
    scaled = x.astype(np.float32) / 255
    inputs = keras.Input((16, 16, 1), name="image")
    h = L.MaxPooling2D()(L.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    h = L.UpSampling2D()(L.Conv2D(8, 3, padding="same", activation="relu")(h))
    model = keras.Model(inputs, L.Conv2D(1, 3, padding="same", activation="sigmoid", name="reconstruction")(h))
    _fit(model, scaled[:300], scaled[:300], "mse", epochs=10)
    return _save(folder, "autoencoder", model, {"x": x[300:], "y": scaled[300:]}, {"x": x[:200]},
                 'task = "regression"\n[input]\nscale = 0.00392156862745098\n')


def normalization(folder: Path, rng) -> Zoo:
    import keras

    L = keras.layers
    x, y = _images(rng, 600, 12, channels=3)
    raw = x.astype(np.float32)
    norm = L.Normalization()
    norm.adapt(raw[:200] / 255.0)
    inputs = keras.Input((12, 12, 3), name="pixels")  # raw 0..255: the model rescales and normalizes inside
    h = L.Conv2D(8, 3, activation="relu")(norm(L.Rescaling(1 / 255.0)(inputs)))
    model = keras.Model(inputs, L.Dense(4, activation="softmax", name="probs")(L.GlobalAveragePooling2D()(h)))
    _fit(model, raw[:500], y[:500], "sparse_categorical_crossentropy", epochs=12)
    return _save(folder, "normalization", model, {"x": x[500:], "y": y[500:]}, {"x": x[:200]},
                 'task = "classification"\n')


def regression_arch_file(folder: Path) -> Path:
    """A user's architecture file for ``edgedl train --model file.py:build --task regression``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "regressor.py"
    path.write_text(
        "import keras\n\n\n"
        "def build(input_shape, num_classes):  # num_classes: the number of regression targets here\n"
        "    return keras.Sequential([keras.Input(input_shape, name='features'),\n"
        "                             keras.layers.Dense(32, activation='relu'),\n"
        "                             keras.layers.Dense(num_classes, name='value')])\n")
    return path


def regression_data(folder: Path, rng) -> Path:
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5, 0.0, 1.0], np.float32) + 0.3 * x[:, 0] ** 2).astype(np.float32)
    np.savez(folder / "regression.npz", x_train=x, y_train=y)
    return folder / "regression.npz"


def outlier_channels(folder: Path, rng, factor: float = 300.0) -> Zoo:
    """A small CNN on 8×8 digits whose first conv layer has two outlier channels: its activations
    there are ``factor``× the others', and the next layer's weights for them ``factor``× smaller.

    Made from a trained CNN by a function-preserving rescaling (ReLU is positively homogeneous: the
    float model computes the same function to rounding), it is what per-channel range imbalance looks
    like to a quantizer: the reason MobileNetV2 loses most of its accuracy under naive PTQ (Nagel et al.,
    "Data-Free Quantization", 2019) and transformer residual outliers break int8 (Bondarenko et al.,
    2021). One per-tensor int8 scale must cover both, so the other 14 channels get a handful of steps.
    The card names the training data too, so ``edgedl finetune`` can continue training it.
    """
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.reshape(-1, 8, 8, 1).astype(np.uint8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    scaled = x.astype(np.float32) / 16.0
    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1), name="pixels"), L.Conv2D(16, 3, activation="relu", name="conv1"),
                              L.Conv2D(16, 3, activation="relu", name="conv2"), L.Flatten(name="flatten"),
                              L.Dense(10, activation="softmax", name="digit")], name="outlier_cnn")
    _fit(model, scaled[:1300], y[:1300], "sparse_categorical_crossentropy", epochs=15, lr=1e-3)
    k1, b1 = model.get_layer("conv1").get_weights()
    k2, b2 = model.get_layer("conv2").get_weights()
    for channel in (0, 1):
        k1[..., channel] *= factor
        b1[channel] *= factor
        k2[:, :, channel, :] /= factor
    model.get_layer("conv1").set_weights([k1, b1])
    model.get_layer("conv2").set_weights([k2, b2])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "outlier_cnn_train.npz", x_train=x[:1300], y_train=y[:1300])
    return _save(folder, "outlier_cnn", model, {"x": x[1300:], "y": y[1300:]}, {"x": x[:200]},
                 'task = "classification"\n[input]\nscale = 0.0625\n', extra_data='train = "outlier_cnn_train.npz"\n')


BUILDERS = [mobilenet_v2, mobilenet_v3, text_cnn, gru, bilstm, transformer, two_in_two_out, autoencoder,
            normalization]


# ---------------------------------------------------------------- the zoo table for docs/BENCHMARKS.md

def table(folder: Path, bench_time: float = 0.5) -> str:
    """Every zoo model through every export target, validation and a benchmark: one Markdown row per artifact."""
    from edgedl.api import bench, validate
    from edgedl.export import ExportOptions, export, plan_targets

    rng = np.random.default_rng(0)
    lines = ["| model | artifact | size (KB) | parity | agreement / error | p50 (µs) |", "|---|---|---|---|---|---|"]
    for build in BUILDERS:
        zoo = build(folder, rng)
        out = folder / f"{zoo.name}_exports"
        for fmt, quantize in (("tflite", ["none", "fp16", "dynamic", "int8"]), ("onnx", ["none", "int8"])):
            for q in quantize:
                targets, _ = plan_targets([fmt], [q])
                try:
                    export(zoo.model, targets, out=out, options=ExportOptions(card=str(zoo.card)))
                except Exception as exc:  # a refusal (GRU int8 TFLite) is a row too
                    lines.append(f"| {zoo.name} | {fmt} {q} | – | refused | {str(exc)[:80]} | – |")
        report = validate(zoo.model, [out], report=str(folder / f"{zoo.name}_validation.json"))
        timing = {r["artifact"]: r for r in bench(out, min_time=bench_time, warmup=5)["results"]}
        for row in report["artifacts"]:
            first = (row.get("outputs") or [{}])[0].get("metrics", {})
            score = f"{first['agreement']:.2%}" if "agreement" in first else \
                f"{first.get('rel_error', float('nan')):.2e} of range"
            p50 = timing.get(row["artifact"], {}).get("p50_us")
            lines.append(f"| {zoo.name} | {row['artifact']} | {row['size'] / 1024:,.1f} | "
                         f"{'pass' if row['passed'] else 'FAIL'} | {score} | {p50:.1f} |" if p50 else
                         f"| {zoo.name} | {row['artifact']} | {row['size'] / 1024:,.1f} | "
                         f"{'pass' if row['passed'] else 'FAIL'} | {score} | – |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)))
