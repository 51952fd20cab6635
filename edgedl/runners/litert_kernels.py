"""Which ops LiteRT's CPU kernels run with 16-bit activations (int16x8), measured, and the ones that fail.

Measured on 2026-11-27 with tensorflow-cpu 2.21's converter and ai-edge-litert 2.3.0: one tiny Keras
model per op, converted with EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, then
allocated *and invoked* in a child process (a kernel can pass prepare and refuse the type in Eval).
Numerics were checked on whole models, not per op. An op in neither table is not known: export
then decides by running the converted model once in a child process (``check_int16``).
"""

from __future__ import annotations

# converted as INT16 and run by LiteRT 2.3
INT16_KERNELS = frozenset({
    "FULLY_CONNECTED", "ADD", "SUB", "MUL", "MEAN", "SUM", "REDUCE_MAX", "RSQRT", "EXP", "LOG", "ABS", "SOFTMAX",
    "LOGISTIC", "TANH", "GELU", "RELU", "BATCH_MATMUL", "TRANSPOSE", "RESHAPE", "CONCATENATION", "MAXIMUM", "PAD",
    "STRIDED_SLICE", "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "QUANTIZE", "DEQUANTIZE",
})

# what goes wrong with the others, in the words a user needs
INT16_REFUSED = {
    "SQUARED_DIFFERENCE": "the converter emits it in int16 but LiteRT 2.3 refuses it at invoke "
                          "('SquaredDifference only supports FLOAT32 and INT32')",
    "NEG": "the converter has no 16-bit NEG",
    "DIV": "the converter has no 16-bit DIV",
    "SQRT": "the converter has no 16-bit SQRT",
    "HARD_SWISH": "the converter has no 16-bit HARD_SWISH",
}
