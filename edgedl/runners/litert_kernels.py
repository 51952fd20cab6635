"""Which ops LiteRT's CPU kernels run with 16-bit activations (int16x8), measured, and the ones that fail.

Measured on 2026-11-27 with tensorflow-cpu 2.21's converter and ai-edge-litert 2.3.0: one tiny Keras
model per op, converted with EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, then
allocated *and invoked* in a child process (a kernel can pass prepare and refuse the type in Eval).
Numerics were checked on whole models, not per op. These converted as INT16 and ran: FULLY_CONNECTED,
ADD, SUB, MUL, MEAN, SUM, REDUCE_MAX, RSQRT, EXP, LOG, ABS, SOFTMAX, LOGISTIC, TANH, GELU, RELU,
BATCH_MATMUL, TRANSPOSE, RESHAPE, CONCATENATION, MAXIMUM, PAD, STRIDED_SLICE, CONV_2D,
DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, QUANTIZE, DEQUANTIZE. Export refuses the ops below
(naming the layer) before anything runs, then runs every int16x8 model once in a child process,
which decides for ops measured nowhere (``_check_int16`` in export/worker.py).
"""

from __future__ import annotations

# what goes wrong with the others, in the words a user needs
INT16_REFUSED = {
    "SQUARED_DIFFERENCE": "the converter emits it in int16 but LiteRT 2.3 refuses it at invoke "
                          "('SquaredDifference only supports FLOAT32 and INT32')",
    "NEG": "the converter has no 16-bit NEG",
    "DIV": "the converter has no 16-bit DIV",
    "SQRT": "the converter has no 16-bit SQRT",
    "HARD_SWISH": "the converter has no 16-bit HARD_SWISH",
}
