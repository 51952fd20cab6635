"""Keras 3 traps on the way to ONNX, and what gets around each (measured 2026-11-27, tf2onnx 1.17).

- **Captured tensors become graph inputs.** Keras 3's ``Normalization`` keeps its adapted mean and
  variance as plain tensors, not variables; a traced function captures them and tf2onnx turns them
  into extra graph inputs (the checker passes, onnxruntime then asks for them). ``frozen_graph``
  freezes the variables and turns every remaining captured tensor into a constant.
- **Exact GELU** becomes TensorFlow's ``Erfc``, which tf2onnx passes through as an op ONNX lacks
  (tf2onnx stops at opset 18; opset 20's Gelu is out of reach). ``register_erfc`` teaches it
  Erfc(x) = 1 − Erf(x) (error ≤ 4.8e-7 over −30…30).
- **GRU** becomes a generic ONNX ``Loop`` (tf2onnx does not recognise the Keras 3 cell), 14× slower
  than a native GRU node and impossible to quantize. ``native_gru`` swaps each GRU's ``call`` for the
  Keras-2 while-loop form while tracing, which tf2onnx rewrites to one ``GRU`` node.
"""

from __future__ import annotations

import contextlib

import numpy as np

_ERFC_REGISTERED = False


def register_erfc() -> None:
    """Teach tf2onnx the TensorFlow op Erfc, once per process."""
    global _ERFC_REGISTERED
    if _ERFC_REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):  # noqa: ARG003
            dtype = ctx.get_dtype(node.input[0])
            source, output = node.input[0], node.output[0]
            shapes = [ctx.get_shape(output)]
            ctx.remove_node(node.name)
            erf = ctx.make_node("Erf", [source], name=utils.make_name(node.name + "_erf"))
            one = ctx.make_const(utils.make_name(node.name + "_one"),
                                 np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
            ctx.make_node("Sub", [one.output[0], erf.output[0]], outputs=[output], shapes=shapes, dtypes=[dtype],
                          name=utils.make_name(node.name + "_sub"))

    _ERFC_REGISTERED = True


def frozen_graph(forward):
    """(GraphDef, input tensor names, output tensor names) of a traced function, with every variable
    and every captured tensor turned into a constant, so the graph's inputs are the model's inputs."""
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # As tf2onnx's own from_function freezes: functional While kept (its RNN rewriters match those).
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function(), lower_control_flow=False,
                                               aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    values = {inner.op.name: outer.numpy() for outer, inner in frozen.graph.captures if outer.dtype != tf.resource}
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name in values:
            dtype = node.attr["dtype"]
            node.op = "Const"
            node.ClearField("attr")
            node.attr["dtype"].CopyFrom(dtype)
            node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(values[node.name])))
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource and t.op.name not in values]
    return graph_def, inputs, [t.name for t in frozen.outputs]


# ---------------------------------------------------------------- GRU

def gru_layers(model):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if layer.__class__.__name__ == "GRU"]


def gru_unsupported(layer) -> str | None:
    """Why this GRU cannot become a native ONNX GRU node (it then stays a Loop, which still converts)."""
    cell = layer.cell
    checks = [(not cell.reset_after, "reset_after=False"), (not cell.use_bias, "use_bias=False"),
              (getattr(cell.activation, "__name__", "") != "tanh", "activation other than tanh"),
              (getattr(cell.recurrent_activation, "__name__", "") != "sigmoid", "recurrent_activation other than sigmoid"),
              (layer.go_backwards or layer.return_state or layer.stateful, "go_backwards, return_state or stateful")]
    return next((why for failed, why in checks if failed), None)


def _gru_call(layer):
    """Keras 2's GRU loop (TensorArray in and out, BiasAdd + Split per gate): tf2onnx's GRU pattern."""
    import tensorflow as tf

    cell = layer.cell
    units = cell.units
    kernel, recurrent, bias = (np.asarray(v.numpy(), np.float32) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))

    def call(sequences, initial_state=None, mask=None, training=False):  # noqa: ARG001
        w, u = tf.constant(kernel), tf.constant(recurrent)  # created inside the trace: constants, not captures
        b_in, b_rec = tf.constant(bias[0]), tf.constant(bias[1])
        steps_first = tf.transpose(sequences, [1, 0, 2])
        steps = steps_first.shape[0]
        read = tf.TensorArray(tf.float32, size=steps).unstack(steps_first)
        written = tf.TensorArray(tf.float32, size=steps)
        zeros = tf.zeros(tf.stack([tf.shape(sequences)[0], units]))
        h0 = initial_state[0] if initial_state is not None else zeros

        def body(t, h, out):
            x_z, x_r, x_h = tf.split(tf.nn.bias_add(tf.matmul(read.read(t), w), b_in), 3, axis=1)
            r_z, r_r, r_h = tf.split(tf.nn.bias_add(tf.matmul(h, u), b_rec), 3, axis=1)
            z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
            h_new = z * h + (1 - z) * tf.tanh(x_h + r * r_h)
            return t + 1, h_new, out.write(t, h_new)

        _, h, written = tf.while_loop(lambda t, *_: t < steps, body, [tf.constant(0), h0, written])
        return tf.transpose(written.stack(), [1, 0, 2]) if layer.return_sequences else h

    return call


@contextlib.contextmanager
def native_gru(model):
    """While active, every supported GRU layer traces as the loop tf2onnx turns into one GRU node."""
    swapped = [layer for layer in gru_layers(model) if gru_unsupported(layer) is None]
    for layer in swapped:
        layer.call = _gru_call(layer)
    try:
        yield
    finally:
        for layer in swapped:
            del layer.call
