"""Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional) → TFLite unrolled over their fixed timesteps.

Why: the fused UNIDIRECTIONAL_SEQUENCE_LSTM op (fused_lstm.py) is one stateful op that XNNPACK does
not take, and its full-integer kernel is slow on x86; the seed LSTM ran 1.5× onnxruntime's float
LSTM with it. Written out step by step, the recurrence is plain builtin ops (FULLY_CONNECTED, ADD,
SUB, MUL, LOGISTIC, TANH, SLICE, SPLIT, RESHAPE, CONCATENATION), XNNPACK takes the whole graph as one
partition, and there are no variable tensors to reset between inferences. Measured on the seed LSTM
(docs/BENCHMARKS.md, "LSTM paths"): dynamic range 0.66× onnxruntime float, full int8 about the same.

The price: the number of timesteps is fixed at export (an open time axis needs --seq-len), and the
graph grows by ~2 KB per step on top of the weights.

Shape of the graph, each choice because XNNPACK rejects the obvious op and would otherwise split the
graph into one partition per step:
- x·W + b for all timesteps is one FULLY_CONNECTED, cut per step with one RESHAPE and a SLICE each
  (not UNPACK, a shrinking STRIDED_SLICE, or a T-way SPLIT); each step adds one recurrent h·U;
- gates come from equal SPLITs (not SPLIT_V); per-step outputs are joined by CONCATENATIONs of at
  most 4 inputs and a RESHAPE (not PACK);
- go_backwards walks the steps in reverse and Bidirectional re-orders its backward outputs in Python
  (no REVERSE_V2); TimeDistributed runs its layer once on [B·T, …] (Keras calls it per step + PACK).
With a zero initial state the first step skips h·U. While the model is traced, each of these layers'
``call`` is swapped for the unrolled loop, holding its weights as constants.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import ExportError

KINDS = ("LSTM", "GRU", "SimpleRNN")


def recurrent_layers(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if layer.__class__.__name__ in KINDS]


def unsupported_reason(model) -> str | None:
    """Why this model cannot be unrolled, or None."""
    layers = recurrent_layers(model)
    if not layers:
        return "it has no LSTM, GRU or SimpleRNN layer to unroll"
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = layer.__class__.__name__
        if kind == "RNN" or (kind not in KINDS and hasattr(layer, "cell") and hasattr(layer, "return_sequences")):
            return f"layer {layer.name!r} ({kind}): a custom recurrent cell cannot be written out step by step"
    for layer in layers:
        if layer.stateful:
            return f"layer {layer.name!r}: stateful=True carries state across calls"
    return None


def converter_for(model):
    """A TFLiteConverter over the batch-1 model with every recurrent layer unrolled."""
    from .fused_lstm import traced_converter

    return traced_converter(model, _unrolled_layers(model), "an unrolled graph")


def _unrolled_layers(model):
    from .fused_lstm import swapped_calls

    reason = unsupported_reason(model)
    if reason:
        raise ExportError(f"cannot unroll: {reason}", hint="export without the unrolled tag (fused LSTM), or ONNX")
    return swapped_calls(_replacements(model))


def _replacements(model) -> dict:
    """{layer: its unrolled call}: every recurrent layer, each Bidirectional and TimeDistributed."""
    runs = {layer: _run_for(layer) for layer in recurrent_layers(model)}
    calls = {layer: _as_call(layer, run) for layer, run in runs.items()}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = layer.__class__.__name__
        if kind == "Bidirectional":
            calls[layer] = _bidirectional_call(layer, runs[layer.forward_layer], runs[layer.backward_layer])
        elif kind == "TimeDistributed":
            calls[layer] = _time_distributed_call(layer)
    return calls


def _run_for(layer):
    return {"LSTM": _lstm_run, "GRU": _gru_run, "SimpleRNN": _simple_rnn_run}[layer.__class__.__name__](layer)


# ---------------------------------------------------------------- graph pieces XNNPACK takes

def _const(array):
    import tensorflow as tf

    return tf.constant(np.asarray(array, np.float32))


def _steps(tensor, batch: int, steps: int) -> list:
    """[B, T, G] or [B·T, G] → T tensors [B, G]: one RESHAPE, then one SLICE per step."""
    import tensorflow as tf

    flat = tf.reshape(tensor, [batch, -1])
    width = flat.shape[1] // steps
    return [tf.slice(flat, [0, t * width], [batch, width]) for t in range(steps)]


def _concat(parts: list, axis: int, group: int = 4):
    """tf.concat as a tree of CONCATENATIONs of at most ``group`` inputs (XNNPACK takes up to 5)."""
    import tensorflow as tf

    while len(parts) > 1:
        parts = [tf.concat(parts[k:k + group], axis) if len(parts[k:k + group]) > 1 else parts[k]
                 for k in range(0, len(parts), group)]
    return parts[0]


def _stack(outputs: list):
    """T tensors [B, U] → [B, T, U] with CONCATENATIONs and a RESHAPE (XNNPACK rejects PACK)."""
    import tensorflow as tf

    batch, units = outputs[0].shape
    return tf.reshape(_concat(outputs, 1), [batch, len(outputs), units])


def _projected(sequences, kernel, bias, backwards: bool) -> list:
    """x_t·W + b for every step in processing order, from one FULLY_CONNECTED over all timesteps."""
    import tensorflow as tf

    batch, steps, features = sequences.shape
    if batch is None or steps is None:
        raise ExportError("an unrolled graph needs a fixed number of timesteps", hint="pass --seq-len N")
    per_step = _steps(tf.matmul(tf.reshape(sequences, [batch * steps, features]), kernel) + bias, batch, steps)
    return per_step[::-1] if backwards else per_step


def _initial(initial_state, count: int) -> list:
    if initial_state is None:
        return [None] * count
    states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
    if len(states) != count:
        raise ExportError(f"expected {count} initial state tensors, got {len(states)}")
    return states


def _weights(cell, gates: int):
    kernel = np.asarray(cell.kernel.numpy(), np.float32)
    recurrent = np.asarray(cell.recurrent_kernel.numpy(), np.float32)
    bias = np.asarray(cell.bias.numpy(), np.float32) if cell.use_bias else np.zeros(gates * cell.units, np.float32)
    return kernel, recurrent, bias


# ---------------------------------------------------------------- the cells, one step at a time

def _lstm_run(layer):
    import tensorflow as tf

    cell = layer.cell
    kernel, recurrent, bias = (_const(w) for w in _weights(cell, 4))  # gates i, f, c, o
    gate, act = cell.recurrent_activation, cell.activation

    def run(sequences, initial_state):
        h, c = _initial(initial_state, 2)
        outputs = []
        for x in _projected(sequences, kernel, bias, layer.go_backwards):
            z = x if h is None else x + tf.matmul(h, recurrent)
            i, f, g, o = tf.split(z, 4, axis=1)
            i, f, o, g = gate(i), gate(f), gate(o), act(g)
            c = i * g if c is None else f * c + i * g
            h = o * act(c)
            outputs.append(h)
        return outputs, [h, c]

    return run


def _gru_run(layer):
    import tensorflow as tf

    cell, units = layer.cell, layer.cell.units
    kernel_np, recurrent_np, _ = _weights(cell, 3)  # gates z, r, h
    gate, act = cell.recurrent_activation, cell.activation
    zeros = np.zeros(units, np.float32)
    if cell.reset_after:
        in_bias, rec_bias = cell.bias.numpy() if cell.use_bias else np.zeros((2, 3 * units), np.float32)
        # z and r see b_in + b_rec whatever h is: the recurrent bias's z/r part joins the input bias
        in_bias = in_bias + np.concatenate([rec_bias[: 2 * units], zeros])
        rec_bias = np.concatenate([zeros, zeros, rec_bias[2 * units:]])
    else:
        in_bias, rec_bias = (cell.bias.numpy() if cell.use_bias else np.zeros(3 * units, np.float32)), None
    kernel, bias, recurrent = _const(kernel_np), _const(in_bias), _const(recurrent_np)
    recurrent_zr, recurrent_h = _const(recurrent_np[:, : 2 * units]), _const(recurrent_np[:, 2 * units:])

    def step(x, h):
        x_z, x_r, x_h = tf.split(x, 3, axis=1)
        if h is None:  # zero state: h·U is 0
            z, r = gate(x_z), gate(x_r)
            candidate = act(x_h + r * _const(rec_bias[2 * units:])) if cell.reset_after else act(x_h)
            return (1.0 - z) * candidate
        if cell.reset_after:
            r_z, r_r, r_h = tf.split(tf.matmul(h, recurrent) + _const(rec_bias), 3, axis=1)
            z, r = gate(x_z + r_z), gate(x_r + r_r)
            candidate = act(x_h + r * r_h)
        else:
            r_z, r_r = tf.split(tf.matmul(h, recurrent_zr), 2, axis=1)
            z, r = gate(x_z + r_z), gate(x_r + r_r)
            candidate = act(x_h + tf.matmul(r * h, recurrent_h))
        return candidate + z * (h - candidate)  # z·h + (1 − z)·candidate, one MUL fewer

    def run(sequences, initial_state):
        (h,) = _initial(initial_state, 1)
        outputs = []
        for x in _projected(sequences, kernel, bias, layer.go_backwards):
            h = step(x, h)
            outputs.append(h)
        return outputs, [h]

    return run


def _simple_rnn_run(layer):
    import tensorflow as tf

    cell = layer.cell
    kernel, recurrent, bias = (_const(w) for w in _weights(cell, 1))

    def run(sequences, initial_state):
        (h,) = _initial(initial_state, 1)
        outputs = []
        for x in _projected(sequences, kernel, bias, layer.go_backwards):
            h = cell.activation(x if h is None else x + tf.matmul(h, recurrent))
            outputs.append(h)
        return outputs, [h]

    return run


# ---------------------------------------------------------------- the layers' calls

def _no_mask(layer, mask) -> None:
    if mask is not None:
        raise ExportError(f"layer {layer.name!r}: masked sequences cannot be unrolled",
                          hint="export without the unrolled tag (fused LSTM), or ONNX")


def _as_call(layer, run):
    def call(sequences, initial_state=None, mask=None, training=False):  # noqa: ARG001 (Keras' signature)
        _no_mask(layer, mask)
        outputs, states = run(sequences, initial_state)
        output = _stack(outputs) if layer.return_sequences else outputs[-1]
        return (output, *states) if layer.return_state else output

    return call


MERGES = {"concat": None, "sum": lambda a, b: a + b, "ave": lambda a, b: (a + b) * 0.5, "mul": lambda a, b: a * b}


def _bidirectional_call(layer, forward_run, backward_run):
    """Bidirectional without REVERSE_V2: the backward outputs are re-ordered in Python."""
    import tensorflow as tf

    if layer.merge_mode not in MERGES and layer.merge_mode is not None:
        raise ExportError(f"layer {layer.name!r}: merge_mode {layer.merge_mode!r} cannot be unrolled")

    def call(sequences, initial_state=None, mask=None, training=None):  # noqa: ARG001 (Keras' signature)
        _no_mask(layer, mask)
        half = None if initial_state is None else len(initial_state) // 2
        fwd, fwd_states = forward_run(sequences, None if half is None else initial_state[:half])
        bwd, bwd_states = backward_run(sequences, None if half is None else initial_state[half:])
        y, y_rev = (_stack(fwd), _stack(bwd[::-1])) if layer.return_sequences else (fwd[-1], bwd[-1])
        merge = layer.merge_mode
        if merge is None:
            output = [y, y_rev]
        else:
            output = tf.concat([y, y_rev], axis=-1) if merge == "concat" else MERGES[merge](y, y_rev)
        if layer.return_state:
            return tuple((output if merge is None else [output]) + fwd_states + bwd_states)
        return output

    return call


def _time_distributed_call(layer):
    """TimeDistributed as one call of its layer on [B·T, …]."""
    import tensorflow as tf

    def call(inputs, training=None, mask=None):  # noqa: ARG001 (Keras' signature)
        _no_mask(layer, mask)
        batch, steps = inputs.shape[0], inputs.shape[1]
        merged = layer.layer(tf.reshape(inputs, [batch * steps, *inputs.shape[2:]]), training=False)
        return tf.reshape(merged, [batch, steps, *merged.shape[1:]])

    return call
