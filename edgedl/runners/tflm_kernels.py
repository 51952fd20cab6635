"""TFLite Micro's kernels: which builtin op has one, the ``MicroMutableOpResolver`` call that adds it,
and the flash its code takes.

Kernel list: ``tensorflow/lite/micro/micro_mutable_op_resolver.h`` (tflite-micro 90b983c2, 2026-08-20), checked
against the kernels registered in the tflite-micro 0.dev20261023 wheel. 100 builtin ops have a kernel; the
others (GELU, the non-fused LSTM, BIDIRECTIONAL_SEQUENCE_LSTM, RNN, TILE, POW, RANGE, ONE_HOT, TOPK_V2,
WHERE, REDUCE_PROD, all STABLEHLO_*…) have none. TFLM ignores op versions: a kernel that exists can still
refuse a tensor type when the interpreter prepares it, which is why ``mcu-check`` also runs the model.

Flash, measured for edgedl on 2026-11-27 (no vendor publishes per-kernel sizes): Debian arm-none-eabi-g++
12.2.1, Cortex-M4F (-mcpu=cortex-m4 -mthumb -mfloat-abi=hard), -Os, reference kernels, TF_LITE_STATIC_MEMORY,
TF_LITE_STRIP_ERROR_STRINGS, newlib-nano, --gc-sections; flash = text + data of a linked program.
``single`` = flash(framework + only this op) − flash(framework): an upper bound for the op (it includes
helpers other ops share). Summed over a model's ops it over-estimates the kernel code measured for the
seed models by 30–60 % (4–12 KB): a fit check errs on the safe side. CMSIS-NN or ESP-NN kernels, -O2 builds
and Cortex-M0+ (soft float) differ.
"""

FRAMEWORK_FLASH = 10_768  # MicroInterpreter, allocator, resolver with no op: bytes over an empty program

# builtin op → (MicroMutableOpResolver method, flash bytes upper bound)
KERNELS = {
    "ADD": ("AddAdd", 9388),
    "AVERAGE_POOL_2D": ("AddAveragePool2D", 5640),
    "CONCATENATION": ("AddConcatenation", 3136),
    "CONV_2D": ("AddConv2D", 9680),
    "DEPTHWISE_CONV_2D": ("AddDepthwiseConv2D", 9056),
    "DEPTH_TO_SPACE": ("AddDepthToSpace", 2144),
    "DEQUANTIZE": ("AddDequantize", 3040),
    "EMBEDDING_LOOKUP": ("AddEmbeddingLookup", 2840),
    "FLOOR": ("AddFloor", 832),
    "FULLY_CONNECTED": ("AddFullyConnected", 7824),
    "L2_NORMALIZATION": ("AddL2Normalization", 2276),
    "L2_POOL_2D": ("AddL2Pool2D", 3556),
    "LOGISTIC": ("AddLogistic", 7720),
    "MAX_POOL_2D": ("AddMaxPool2D", 5736),
    "MUL": ("AddMul", 9004),
    "RELU": ("AddRelu", 4648),
    "RELU6": ("AddRelu6", 2568),
    "RESHAPE": ("AddReshape", 1440),
    "RESIZE_BILINEAR": ("AddResizeBilinear", 2848),
    "SOFTMAX": ("AddSoftmax", 8956),
    "SPACE_TO_DEPTH": ("AddSpaceToDepth", 2144),
    "SVDF": ("AddSvdf", 8564),
    "TANH": ("AddTanh", 7912),
    "PAD": ("AddPad", 3232),
    "GATHER": ("AddGather", 2304),
    "BATCH_TO_SPACE_ND": ("AddBatchToSpaceNd", 1824),
    "SPACE_TO_BATCH_ND": ("AddSpaceToBatchNd", 1824),
    "TRANSPOSE": ("AddTranspose", 1920),
    "MEAN": ("AddMean", 7424),
    "SUB": ("AddSub", 9484),
    "DIV": ("AddDiv", 8544),
    "SQUEEZE": ("AddSqueeze", 1376),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("AddUnidirectionalSequenceLSTM", 14456),
    "STRIDED_SLICE": ("AddStridedSlice", 5184),
    "EXP": ("AddExp", 1852),
    "SPLIT": ("AddSplit", 1472),
    "LOG_SOFTMAX": ("AddLogSoftmax", 8352),
    "CAST": ("AddCast", 2368),
    "PRELU": ("AddPrelu", 6368),
    "MAXIMUM": ("AddMaximum", 5184),
    "ARG_MAX": ("AddArgMax", 1856),
    "MINIMUM": ("AddMinimum", 5216),
    "LESS": ("AddLess", 7520),
    "NEG": ("AddNeg", 960),
    "PADV2": ("AddPadV2", 3232),
    "GREATER": ("AddGreater", 8416),
    "GREATER_EQUAL": ("AddGreaterEqual", 7520),
    "LESS_EQUAL": ("AddLessEqual", 7520),
    "SLICE": ("AddSlice", 2816),
    "SIN": ("AddSin", 4976),
    "TRANSPOSE_CONV": ("AddTransposeConv", 9248),
    "EXPAND_DIMS": ("AddExpandDims", 1344),
    "EQUAL": ("AddEqual", 8160),
    "NOT_EQUAL": ("AddNotEqual", 8128),
    "LOG": ("AddLog", 1480),
    "SUM": ("AddSum", 6656),
    "SQRT": ("AddSqrt", 932),
    "RSQRT": ("AddRsqrt", 4996),
    "SHAPE": ("AddShape", 736),
    "ARG_MIN": ("AddArgMin", 1856),
    "REDUCE_MAX": ("AddReduceMax", 4704),
    "PACK": ("AddPack", 1408),
    "LOGICAL_OR": ("AddLogicalOr", 1632),
    "LOGICAL_AND": ("AddLogicalAnd", 1632),
    "LOGICAL_NOT": ("AddLogicalNot", 800),
    "UNPACK": ("AddUnpack", 1280),
    "REDUCE_MIN": ("AddReduceMin", 4704),
    "FLOOR_DIV": ("AddFloorDiv", 4928),
    "SQUARE": ("AddSquare", 832),
    "ZEROS_LIKE": ("AddZerosLike", 896),
    "FILL": ("AddFill", 1408),
    "FLOOR_MOD": ("AddFloorMod", 2668),
    "RESIZE_NEAREST_NEIGHBOR": ("AddResizeNearestNeighbor", 2400),
    "LEAKY_RELU": ("AddLeakyRelu", 4712),
    "SQUARED_DIFFERENCE": ("AddSquaredDifference", 7936),
    "MIRROR_PAD": ("AddMirrorPad", 1056),
    "ABS": ("AddAbs", 4448),
    "SPLIT_V": ("AddSplitV", 1568),
    "CEIL": ("AddCeil", 1056),
    "REVERSE_V2": ("AddReverseV2", 4480),
    "ADD_N": ("AddAddN", 5312),
    "GATHER_ND": ("AddGatherNd", 1984),
    "COS": ("AddCos", 4976),
    "ELU": ("AddElu", 2844),
    "QUANTIZE": ("AddQuantize", 5600),
    "ROUND": ("AddRound", 1120),
    "HARD_SWISH": ("AddHardSwish", 4520),
    "IF": ("AddIf", 1248),
    "WHILE": ("AddWhile", 1408),
    "SELECT_V2": ("AddSelectV2", 5248),
    "BATCH_MATMUL": ("AddBatchMatMul", 8804),
    "CUMSUM": ("AddCumSum", 5472),
    "CALL_ONCE": ("AddCallOnce", 352),
    "BROADCAST_TO": ("AddBroadcastTo", 1784),
    "REDUCE_ALL": ("AddReduceAll", 4160),
    "VAR_HANDLE": ("AddVarHandle", 512),
    "READ_VARIABLE": ("AddReadVariable", 768),
    "ASSIGN_VARIABLE": ("AddAssignVariable", 992),
    "BROADCAST_ARGS": ("AddBroadcastArgs", 1152),
    "DYNAMIC_UPDATE_SLICE": ("AddDynamicUpdateSlice", 2784),
}


# What to do instead when an op has no TFLite Micro kernel: the alternative that keeps the model's maths
# closest, per op. Ops not named here get GENERIC_ALTERNATIVE.
ALTERNATIVES = {
    "GELU": "use relu or hard_swish (HARD_SWISH has a kernel) instead of gelu",
    "SELECT": "write the choice as mask·a + (1 − mask)·b (MUL, ADD), or pick rows with GATHER",
    "BIDIRECTIONAL_SEQUENCE_LSTM": "export the recurrent layers unrolled (`edgedl export --unroll`)",
    "UNIDIRECTIONAL_SEQUENCE_RNN": "export the recurrent layers unrolled (`edgedl export --unroll`)",
    "BIDIRECTIONAL_SEQUENCE_RNN": "export the recurrent layers unrolled (`edgedl export --unroll`)",
    "POW": "a square is x·x (MUL or SQUARE); a square root is SQRT",
    "TILE": "repeat by broadcasting in the op that uses it (ADD, MUL broadcast)",
    "ONE_HOT": "compare with EQUAL against the class ids, or feed one-hot inputs",
    "WHERE": "use a 0/1 mask and MUL instead of indices",
}
GENERIC_ALTERNATIVE = ("replace those layers with ones whose ops have kernels (`edgedl inspect ARTIFACT` lists the "
                       "ops), or target a phone or a Raspberry Pi, where LiteRT runs every builtin op")


def alternatives(ops) -> str:
    """One hint for the ops that have no kernel: each op's own alternative, then the generic one."""
    own = [f"{op}: {ALTERNATIVES[op]}" for op in dict.fromkeys(ops) if op in ALTERNATIVES]
    return "; ".join([*own, GENERIC_ALTERNATIVE])
