"""Quantization-aware fine-tuning on Keras 3, without tfmot (which still needs Keras 2).

The model is fine-tuned while it *computes as int8 would*:
- **weights**: per-channel symmetric int8 ([-127, 127], one scale per output channel, as TFLite's
  FULLY_CONNECTED/CONV_2D quantize them), applied inside the training step through
  ``model.stateless_call``, so no layer has to change;
- **activations**: per-tensor asymmetric int8 with min/max tracked by an exponential moving average
  (momentum 0.99), after every layer and on every float input;
- gradients pass through the rounding unchanged (straight-through estimator).

BatchNormalization after a Conv/Dense is folded into it first (w·γ/σ, (b−μ)·γ/σ+β: the same
function, to 1e-6), so the weight that is fake-quantized is the one that gets deployed; any other
BatchNormalization is frozen (inference mode). What comes out is a plain float Keras model — no
fake-quant layers — that export quantizes with ordinary post-training int8: builtin ops only.

Recurrent layers are refused: the fused int8 LSTM computes its gates with internal scales fake
quantization on layer outputs does not model (measured: the seed LSTM's int8 error comes from there).
"""

from __future__ import annotations

import numpy as np

from ..core.env import import_keras
from ..core.errors import UsageError
from ..core.metrics import accuracy as top1_accuracy

MOMENTUM = 0.99
RECURRENT = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "RNN")
# the Keras layers whose float kernels become int8 weights, and the kernel axes that keep one scale each
FOLDABLE = ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D")


def refuse_unsupported(model) -> None:
    """QAT must be able to model every layer's int8 arithmetic; name the first layer it cannot."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = layer.__class__.__name__
        if kind in RECURRENT:
            raise UsageError(f"quantization-aware training has no safe path for layer {layer.name!r} ({kind}): the "
                             "fused int8 recurrent kernels quantize gates internally, which fake quantization of "
                             "layer outputs does not model",
                             hint="use post-training int8, --quantize int16x8, or --keep-float for that layer")
    policy = getattr(model.dtype_policy, "name", "float32")
    if policy != "float32":
        raise UsageError(f"quantization-aware training needs a float32 model; this one uses {policy}",
                         hint="train without --mixed-precision before --qat")


def _weight_axes(layer, variable) -> tuple[int, ...] | None:
    """The axes reduced to one scale per output channel, or None when the variable stays float."""
    kind = layer.__class__.__name__
    if not variable.path.endswith("kernel") or len(variable.shape) < 2:
        return None
    if kind == "DepthwiseConv2D":
        return (0, 1)  # (kh, kw, in, multiplier): one scale per in×multiplier channel
    if kind == "EinsumDense":
        return (0,)  # (in, heads, dim) in attention: the outputs are every (head, dim)
    if kind.endswith("Transpose"):
        return tuple(i for i in range(len(variable.shape)) if i != len(variable.shape) - 2)
    return tuple(range(len(variable.shape) - 1))


def fake_quant_weight(w, axes):
    from keras import ops

    scale = ops.maximum(ops.max(ops.abs(w), axis=axes, keepdims=True), 1e-8) / 127.0
    return w + ops.stop_gradient(ops.clip(ops.round(w / scale), -127.0, 127.0) * scale - w)


def _fake_quant_layer():
    keras = import_keras()
    from keras import ops

    class FakeQuant(keras.layers.Layer):
        """Per-tensor asymmetric int8 fake quantization, EMA min/max, straight-through gradient."""

        def build(self, shape):
            self.low = self.add_weight(shape=(), name="low", initializer="zeros", trainable=False)
            self.high = self.add_weight(shape=(), name="high", initializer="zeros", trainable=False)
            self.seen = self.add_weight(shape=(), name="seen", initializer="zeros", trainable=False)

        def call(self, x, training=False):
            if training:
                momentum = ops.where(self.seen > 0, MOMENTUM, 0.0)
                self.low.assign(momentum * self.low + (1 - momentum) * ops.min(x))
                self.high.assign(momentum * self.high + (1 - momentum) * ops.max(x))
                self.seen.assign(1.0)
            low, high = ops.minimum(self.low, 0.0), ops.maximum(self.high, 1e-6)  # zero must be representable
            scale = (high - low) / 255.0
            zero = ops.round(-128.0 - low / scale)
            quantized = (ops.clip(ops.round(x / scale) + zero, -128.0, 127.0) - zero) * scale
            return x + ops.stop_gradient(quantized - x)

    return FakeQuant


def fold_batch_norm(model):
    """The same model with each BatchNormalization that directly follows a Conv/Dense (its only reader)
    folded into it; returns (model, [(layer, batchnorm) names folded])."""
    keras = import_keras()
    folds = _foldable_pairs(model)
    if not folds:
        return model, []
    into = {conv: bn for conv, bn in folds}
    removed = set(into.values())

    def clone(layer):
        config = layer.get_config()
        if layer.name in removed:
            return keras.layers.Identity(name=layer.name)
        if layer.name in into:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = folded.get_layer(layer.name)
        if layer.name in removed:
            continue
        if layer.name in into:
            target.set_weights(_folded_weights(layer, model.get_layer(into[layer.name])))
        elif layer.weights:
            target.set_weights(layer.get_weights())
    return folded, folds


def _foldable_pairs(model) -> list[tuple[str, str]]:
    pairs = []
    for layer in model.layers:
        if layer.__class__.__name__ != "BatchNormalization" or len(layer._inbound_nodes) != 1:
            continue
        sources = layer._inbound_nodes[0].input_tensors
        if len(sources) != 1:
            continue
        producer = sources[0]._keras_history.operation
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        if (producer.__class__.__name__ in FOLDABLE and len(producer._outbound_nodes) == 1
                and axis in (-1, len(layer.input.shape) - 1) and getattr(producer, "activation", None) in (
                    None, import_keras().activations.linear)):
            pairs.append((producer.name, layer.name))
    return pairs


def _folded_weights(conv, bn) -> list[np.ndarray]:
    weights = conv.get_weights()
    kernel, bias = weights[0], (weights[1] if len(weights) > 1 else np.zeros(kernel_outputs(conv, weights[0])))
    gamma = bn.gamma.numpy() if bn.gamma is not None else 1.0
    beta = bn.beta.numpy() if bn.beta is not None else 0.0
    factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    if conv.__class__.__name__ == "DepthwiseConv2D":  # (kh, kw, in, multiplier): channel = in × multiplier
        kh, kw, cin, mult = kernel.shape
        kernel = (kernel.reshape(kh, kw, cin * mult) * factor).reshape(kh, kw, cin, mult)
    else:
        kernel = kernel * factor
    return [kernel.astype(np.float32), ((bias - bn.moving_mean.numpy()) * factor + beta).astype(np.float32)]


def kernel_outputs(conv, kernel: np.ndarray) -> int:
    if conv.__class__.__name__ == "DepthwiseConv2D":
        return kernel.shape[2] * kernel.shape[3]
    return kernel.shape[-1]


def with_fake_quant(model):
    """A training twin of ``model`` (sharing its layers and weights) that fake-quantizes every float
    activation: each input, and each layer's outputs."""
    keras = import_keras()
    fake_quant = _fake_quant_layer()

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        return keras.tree.map_structure(lambda t: fake_quant()(t) if "float" in str(t.dtype) else t, outputs)

    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    fed = [fake_quant()(x) if "float" in str(x.dtype) else x for x in inputs]
    if isinstance(model, keras.Sequential):  # a chain: call each layer in turn (clone_model cannot here)
        outputs = fed[0]
        for layer in model.layers:
            outputs = call(layer, outputs)
    else:
        try:
            core = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
        except ValueError as exc:
            raise UsageError(f"quantization-aware training needs a Functional or Sequential model: {exc}") from exc
        outputs = core(fed if len(fed) > 1 else fed[0])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)


def finetune(model, x_train, y_train, x_val, y_val, task: str, epochs: int, learning_rate: float,
             batch_size: int, seed: int, say=print) -> tuple[object, dict]:
    """Fine-tune ``model`` under fake quantization; return (the plain float model, a record of the run).

    The epoch with the lowest fake-quantized validation loss is kept."""
    import tensorflow as tf

    keras = import_keras()
    from keras import ops

    refuse_unsupported(model)
    model, folds = fold_batch_norm(model)
    if folds:
        say(f"QAT: folded {len(folds)} BatchNormalization layer(s) into the layer before: "
            + ", ".join(f"{bn} → {conv}" for conv, bn in folds))
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.__class__.__name__ == "BatchNormalization":
            layer.trainable = False  # not folded: frozen, so training and deployment normalise alike
    twin = with_fake_quant(model)
    keras.utils.set_random_seed(seed)
    owners = {id(v): layer for layer in model._flatten_layers(include_self=False, recursive=True)
              for v in layer.trainable_weights}
    trainable, other = twin.trainable_variables, twin.non_trainable_variables
    axes = [_weight_axes(owners[id(v)], v) if id(v) in owners else None for v in trainable]
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(trainable)
    loss_fn = (keras.losses.MeanSquaredError() if task == "regression"
               else keras.losses.SparseCategoricalCrossentropy())

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            predictions, updated = twin.stateless_call(quantized(), [v.value for v in other], xb, training=True)
            loss = loss_fn(yb, predictions)
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable, strict=True))
        for variable, value in zip(other, updated, strict=True):
            variable.assign(value)
        return loss

    def quantized():
        return [fake_quant_weight(v.value, a) if a is not None else v.value for v, a in zip(trainable, axes, strict=True)]

    def evaluate():
        predictions, _ = twin.stateless_call(quantized(), [v.value for v in other], x_val, training=False)
        return float(loss_fn(y_val, predictions)), np.asarray(predictions)

    rng = np.random.default_rng(seed)
    history, best = {"qat_loss": [], "qat_val_loss": [], "qat_val_accuracy": []}, (np.inf, None, 0)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = [float(step(ops.convert_to_tensor(x_train[order[i:i + batch_size]]),
                             ops.convert_to_tensor(y_train[order[i:i + batch_size]])))
                  for i in range(0, len(order), batch_size)]
        val_loss, predictions = evaluate()
        accuracy = None if task == "regression" else top1_accuracy(predictions, y_val)
        history["qat_loss"].append(float(np.mean(losses)))
        history["qat_val_loss"].append(val_loss)
        history["qat_val_accuracy"].append(accuracy)
        say(f"QAT epoch {epoch}/{epochs}: loss {np.mean(losses):.4f}, fake-quantized val loss {val_loss:.4f}"
            + (f", val accuracy {accuracy:.2%}" if accuracy is not None else ""))
        if val_loss <= best[0]:  # ties go to the later epoch, which has trained longer
            best = (val_loss, [v.numpy() for v in model.weights], epoch)
    for variable, value in zip(model.weights, best[1], strict=True):
        variable.assign(value)
    say(f"QAT: kept epoch {best[2]} (lowest fake-quantized val loss {best[0]:.4f})")
    return model, {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "kept_epoch": best[2],
                   "folded_batchnorm": [list(pair) for pair in folds], "history": history,
                   "weights": "per-channel symmetric int8", "activations": "per-tensor asymmetric int8, EMA 0.99"}
