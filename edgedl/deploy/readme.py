"""The README inside a bundle: how to deploy it on each target, from its own manifest."""

from __future__ import annotations

KOTLIN_TYPES = {"int8": ("Byte", "1"), "uint8": ("Byte", "1"), "float32": ("Float", "4"), "int32": ("Int", "4"),
                "int64": ("Long", "8")}


def readme(manifest: dict, targets: list[str]) -> str:
    model = manifest["model"]
    parts = [_intro(manifest)]
    if "rpi" in targets:
        parts.append(_rpi(model))
    if "android" in targets:
        parts.append(_android(manifest))
    if "mcu" in targets:
        parts.append(_mcu())
    return "\n\n".join(parts) + "\n"


def _intro(manifest: dict) -> str:
    model = manifest["model"]
    parity = manifest["parity"]
    lines = [f"- Input `{t['name']}`: {t.get('description', 'shape ' + str(t['shape']))}; tensor shape {t['shape']}, "
             f"{t['dtype']}{_quant(t)}" for t in manifest["inputs"]]
    lines += [f"- Output `{t['name']}` ({t.get('kind', 'classification')}): shape {t['shape']}, {t['dtype']}{_quant(t)}"
              f"{_parity(parity.get('outputs', {}).get(t['name']) or parity.get('metrics', {}))}"
              for t in manifest["outputs"]]
    labels = "- Labels: `labels.txt`, in output order." if manifest.get("labels") else "- Labels: none (no class output)."
    return f"""# {model['file']} — edgedl bundle

{model['precision']} TFLite model, {model['size']:,} bytes, sha256 `{model['sha256']}`.
Validated against the original Keras model on {parity['samples']} samples of {parity['evidence']}
(details in `parity.json`).

""" + "\n".join(lines) + f"""
- Preprocessing: {manifest['preprocessing']['description']}
- State: {manifest['runtime']['why']}
{labels}"""


def _parity(metrics: dict) -> str:
    if "agreement" in metrics:
        return f"; top-1 agreement with Keras {metrics['agreement']:.2%}"
    if "rel_error" in metrics:
        return f"; largest error {metrics['rel_error']:.3%} of the output's range"
    return ""


def _quant(tensor: dict) -> str:
    q = tensor.get("quantization")
    return f" (quantized: real = (q − {q['zero_point']}) × {q['scale']:.8g})" if q else ""


def _rpi(model: dict) -> str:
    return """## Raspberry Pi (64-bit Pi OS)

```sh
python3 -m venv ~/edgedl-app && . ~/edgedl-app/bin/activate
pip install -r requirements.txt        # numpy + ai-edge-litert; no TensorFlow
python run.py --self-test              # sha256 + golden vectors; exit 0 when the device agrees
python run.py digit.png                # top-3 labels (pip install pillow for images), or a .npy, or -
python run.py --bench                  # latency on this device
```
32-bit Pi OS: ai-edge-litert has no armv7 wheel; use `numpy<2` and `tflite-runtime==2.14.0`
(it cannot read dynamic-range models made by TensorFlow ≥ 2.21). run.py picks whichever is installed."""


def _android(manifest: dict) -> str:
    if len(manifest["inputs"]) > 1 or len(manifest["outputs"]) > 1 or manifest["inputs"][0].get("kind") == "tokens":
        return _android_signature(manifest)
    model = manifest["model"]
    io_in, io_out = manifest["inputs"][0], manifest["outputs"][0]
    kind_in, width_in = KOTLIN_TYPES.get(io_in["dtype"], ("Float", "4"))
    kind_out, _ = KOTLIN_TYPES.get(io_out["dtype"], ("Float", "4"))
    q_in, q_out = io_in.get("quantization"), io_out.get("quantization")
    feed = (f"        val q = (x / {q_in['scale']:.8g}f).roundToInt() + ({q_in['zero_point']})\n"
            f"        input.put(q.coerceIn(-128, 127).toByte())" if q_in else "        input.putFloat(x)")
    read = (f"(output.get(i).toInt() - ({q_out['zero_point']})) * {q_out['scale']:.8g}f" if q_out
            else "output.getFloat(i * 4)")
    reset = "    interpreter.resetVariableTensors()  // fused LSTM keeps state between runs\n" \
        if manifest["runtime"]["reset_variables_before_invoke"] else ""
    values = 1
    for d in io_in["shape"][1:]:
        values *= d or 1
    classes = io_out["shape"][-1]
    return f"""## Android (LiteRT Interpreter API)

Copy `android/app/src/main/assets/` into your app module, then add
`implementation("com.google.ai.edge.litert:litert:2.+")` and `androidResources {{ noCompress += "tflite" }}`.

```kotlin
val interpreter = Interpreter(FileUtil.loadMappedFile(context, "{model['file']}"))
val labels = context.assets.open("labels.txt").bufferedReader().readLines()

fun classify(pixels: FloatArray): String {{   // {values} values, already scaled as in Preprocessing
    val input = ByteBuffer.allocateDirect({values} * {width_in}).order(ByteOrder.nativeOrder())
    for (x in pixels) {{
{feed}
    }}
    val output = ByteBuffer.allocateDirect({classes} * {"1" if q_out else "4"}).order(ByteOrder.nativeOrder())
{reset}    interpreter.run(input.rewind(), output)
    output.rewind()
    val scores = FloatArray({classes}) {{ i -> {read} }}
    return labels[scores.indices.maxBy {{ scores[it] }}]
}}
```
Input buffer type: {kind_in}; output buffer type: {kind_out}. Quantization parameters come from `manifest.json`."""


def _mcu() -> str:
    return """## Microcontrollers (TFLite Micro)

`mcu/model_data.cc` / `mcu/model_data.h` hold the int8 model as a 16-byte aligned array
`g_model_data` with its length `g_model_data_len`. Add both to your firmware and pass
`g_model_data` to `tflite::GetModel()`. Size your tensor arena by trial (`arena_used_bytes()`)."""


def _android_signature(manifest: dict) -> str:
    """Several inputs or outputs, or token ids: by name, through the model's signature."""
    model = manifest["model"]
    feeds = "\n".join(f'    "{t["name"]}" to {_kotlin_array(t)},  // {t.get("description", t["shape"])}'
                      for t in manifest["inputs"])
    outs = "\n".join(f'    "{t.get("signature", t["name"])}" to {_kotlin_array(t)},' for t in manifest["outputs"])
    reset = "interpreter.resetVariableTensors()  // fused LSTM keeps state between runs\n" \
        if manifest["runtime"]["reset_variables_before_invoke"] else ""
    return f"""## Android (LiteRT Interpreter API)

Copy `android/app/src/main/assets/` into your app module, then add
`implementation("com.google.ai.edge.litert:litert:2.+")` and `androidResources {{ noCompress += "tflite" }}`.
The model takes and gives its tensors by name (its signature), so their order cannot be mixed up:

```kotlin
val interpreter = Interpreter(FileUtil.loadMappedFile(context, "{model['file']}"))
val inputs = mapOf<String, Any>(
{feeds}
)
val outputs = mapOf<String, Any>(
{outs}
)
{reset}interpreter.runSignature(inputs, outputs)
```
Quantized tensors hold integers: real = (q − zero_point) × scale, with each tensor's values in `manifest.json`.
Output names in the signature are the converter's (`output_0`, … in Keras order, or the Keras names); the
manifest lists both."""


def _kotlin_array(tensor: dict) -> str:
    kind, _ = KOTLIN_TYPES.get(tensor["dtype"], ("Float", "4"))
    dims = ", ".join(str(d or 1) for d in tensor["shape"])
    return f"Array(1) {{ {kind}Array({_product(tensor['shape'][1:])}) }}  /* shape [{dims}] */"


def _product(shape) -> int:
    total = 1
    for d in shape:
        total *= d or 1
    return total
