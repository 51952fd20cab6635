"""The subcommands of ``edgedl``. Each parses its options, calls one library function, prints."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.errors import EdgedlError, GateFailure, ParityFailure, UsageError
from ..core.settings import GATES, TOLERANCES, TRAIN
from ..data import DEFAULT_DATA, builtin_names
from ..export.plan import CALIBRATION_METHODS, DEFAULT_OPSET, IO_TYPES, ONNX_QUANT_RECIPES, OPSET_RANGE
from ..recipe import DEFAULT_QAT_EPOCHS
from ..train.backends import BACKENDS
from .group import (
    card_options,
    cli,
    csv_list,
    finite,
    int_list,
    preprocessing_options,
    setting_option,
    tolerance_option,
)


@cli.command()
@click.argument("recipe", required=False, metavar="[RECIPE.toml]")
@click.option("--model", "-m", default=None,
              help="Architecture name (mlp, cnn, lstm, lstm_seq), file.py:function, or a .keras file. [default: cnn]")
@click.option("--data", "-d", default=None,
              help=f"Built-in data ({', '.join(builtin_names())}), a Keras dataset name if cached, an .npz with "
                   f"x_train/y_train[/x_test/y_test], or an image folder (one sub-folder per class). [default: {DEFAULT_DATA}]")
@setting_option(TRAIN["epochs"])
@setting_option(TRAIN["batch_size"])
@setting_option(TRAIN["learning_rate"])
@setting_option(TRAIN["augment"])
@setting_option(TRAIN["label_smoothing"])
@setting_option(TRAIN["seed"], help="Seed for split, init, shuffling, augmentation. [default: 0]")
@setting_option(TRAIN["calibration_samples"], help="Training samples saved for int8 calibration. [default: 200]")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="auto uses a GPU whenever TensorFlow sees one.")
@click.option("--strategy", type=click.Choice(["auto", "none", "mirrored", "multiworker"]), default="auto",
              show_default=True, help="tf.distribute strategy; multiworker reads TF_CONFIG.")
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 on GPU (output layer stays float32).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="The Keras backend that trains (export always uses TensorFlow). auto: the one that sees a GPU "
                   "(TensorFlow, then JAX, then PyTorch), else TensorFlow on the CPU. jax/torch need the "
                   "[jax]/[torch] extra. [default: tensorflow, or the recipe's]")
@click.option("--task", type=click.Choice(["classification", "regression"]), default=None,
              help="What the labels are. [default: whole-number labels are classes, anything else regression]")
@click.option("--qat", is_flag=True, help="After float training, fine-tune under int8 fake quantization (per-channel "
                                          "weights, per-tensor activations; BatchNorm folded) so int8 loses less.")
@setting_option(TRAIN["qat_epochs"], help="Epochs of quantization-aware fine-tuning (implies --qat). [default: 3]")
@click.option("--unsafe", is_flag=True, help="Load a .keras --model with safe mode off (runs code inside it).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder for model.keras + manifest.json. [default: runs/<model>]")
def train(recipe, model, data, epochs, batch_size, learning_rate, augment, label_smoothing, seed, calibration_samples,
          device, strategy, mixed_precision, backend, task, qat, qat_epochs, unsafe, out):
    """Train a model and write OUT/model.keras plus OUT/manifest.json.

    \b
    Examples:
      edgedl train --model cnn --out runs/cnn
      edgedl train models/lstm.toml
      edgedl train --model my_arch.py:build --data my_data.npz --epochs 5
      edgedl train --model cnn --backend jax --out runs/cnn-jax
    """
    from ..recipe import train_config

    config = train_config(recipe=recipe, model=model, data=data, epochs=epochs, batch_size=batch_size,
                          learning_rate=learning_rate, augment=augment, label_smoothing=label_smoothing, seed=seed,
                          calibration_samples=calibration_samples, device=device, strategy=strategy,
                          mixed_precision=mixed_precision, task=task, unsafe=unsafe, out=out,
                          qat_epochs=qat_epochs or (DEFAULT_QAT_EPOCHS if qat else None), backend=backend)
    from ..train.fit import train as run_training

    click.echo(f"training {config.model} on {config.data} → {config.out}", err=True)
    manifest = run_training(config, say=lambda m: click.echo(m, err=True))
    score = _score_line(manifest["metrics"])
    if not manifest.get("chief", True):
        click.echo(f"worker done (not the chief; no files written): {score}")
        return
    backend = (manifest["training"].get("backend") or {}).get("name", "tensorflow")
    click.echo(f"{score} ({manifest['metrics']['epochs_run']} epochs, {manifest['training']['time_s']:.1f} s on "
               f"{', '.join(manifest['training']['devices']) or 'cpu'}, {backend})")
    click.echo(f"wrote {config.out / 'model.keras'} and {config.out / 'manifest.json'}")




@cli.command()
@click.argument("run", type=click.Path(exists=True))  # a .keras file gets finetune's own hint, not click's
@click.option("--qat/--float", "qat", default=True, show_default=True,
              help="Fine-tune under int8 fake quantization (quantization-aware), or in plain float (the control).")
@setting_option(TRAIN["epochs"], default=DEFAULT_QAT_EPOCHS, show_default=True,
                help="Fine-tuning epochs; the one with the lowest (fake-quantized) validation loss is kept.")
@setting_option(TRAIN["learning_rate"], help="Fixed learning rate. [default: a tenth of the run's peak learning rate]")
@click.option("--data", default=None, help="Training data (.npz with x_train/y_train…) for a run edgedl did not "
                                           "train. [default: the data the run names]")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The new run folder (the original run is left as it is).")
def finetune(run, qat, epochs, learning_rate, data, out):
    """Fine-tune the model of training RUN into a new run folder, by default quantization-aware.

    Quantization-aware training (Keras 3, no tfmot): weights fake-quantized per channel, activations per
    tensor, BatchNorm folded first; recurrent layers are refused. The new run exports, validates and
    bundles like any run; its int8 export uses ordinary post-training quantization of the fine-tuned weights.
    After --qat, that int8 TFLite file is exported to OUT/exports and validated on held-out data, and its
    accuracy is printed beside the fake-quantized one, with a warning when it fails the int8 gates.

    \b
    Examples:
      edgedl finetune runs/cnn --qat --epochs 3 --out runs/cnn-qat
      edgedl export runs/cnn-qat --quantize int8
    """
    from ..train.finetune import finetune as run_finetune

    manifest = run_finetune(run, out, epochs=epochs, qat=qat, learning_rate=learning_rate, data=data,
                            say=lambda m: click.echo(m, err=True))
    before = (manifest["parent"].get("metrics") or {})
    click.echo(f"{_score_line(manifest['metrics'])}; before: {_score_line(before) if before else 'unknown'}")
    click.echo(f"wrote {Path(out) / 'model.keras'} and {Path(out) / 'manifest.json'}")
    if qat and manifest.get("task") != "regression":  # judged on what ships, not on fake quantization alone
        from ..validate.shipped import int8_as_shipped, lines

        for line in lines(int8_as_shipped(out, say=lambda m: click.echo(m, err=True))):
            click.echo(line)


def _score_line(metrics: dict) -> str:
    if "test_mae" in metrics:
        return f"test MAE {metrics['test_mae']:.4g}, RMSE {metrics['test_rmse']:.4g}"
    val = metrics.get("val_accuracy")
    return f"test accuracy {metrics['test_accuracy']:.4f}" + (f" (val {val:.4f})" if val is not None else "")


def _mcu_target(target: str | None) -> str | None:
    if target is None or target == "mcu":
        return target
    from ..deploy.boards import board

    board(target)  # an unknown board is a usage error that lists them
    return target.lower()


def _parse_shapes(values: tuple[str, ...]) -> dict:
    """``28,28`` for a single input, or ``name=28,28`` per input; every size a whole number ≥ 1."""
    shapes = {}
    for value in values:
        name, _, dims = value.rpartition("=")
        try:
            sizes = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            sizes = []
        if not sizes or any(size < 1 for size in sizes):
            raise click.BadParameter(f"expected sizes ≥ 1 like 28,28 or name=28,28; got {value!r}",
                                     param_hint="--input-shape")
        shapes[name or "*"] = sizes
    return shapes


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("--format", "-f", "formats", default="tflite", show_default=True,
              help="Comma-separated: tflite, onnx.")
@click.option("--quantize", "-q", default="none", show_default=True,
              help="Comma-separated: none (float32), fp16, dynamic (int8 weights), int8 (full integer), int16x8 "
                   "(TFLite: 16-bit activations, 8-bit weights; checked against LiteRT's kernels).")
@click.option("--keep-float", default=None, metavar="auto|LAYER,…",
              help="Keep these Keras layers in float in the int8 targets, which become NAME_mixed.tflite/.onnx "
                   "(int8 elsewhere, float I/O). auto searches the fewest layers that pass the validation gates.")
@click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS), default="minmax",
              show_default=True, help="How int8 sets activation ranges (TFLite int8 and mixed, ONNX static): "
                                      "minmax, entropy or percentile (99.99 %) clipping; auto builds each and keeps "
                                      "the most faithful on the calibration samples (recorded in the sidecar).")
@click.option("--io", type=click.Choice(IO_TYPES), default="int8", show_default=True,
              help="Input/output type of full-integer TFLite models.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="An .npz of representative inputs (key x, or one key per input). [default: the run's subset]")
@setting_option(TRAIN["calibration_samples"], help="Use at most this many calibration samples.")
@click.option("--input-shape", multiple=True, help="Sizes for open dimensions, without batch: 28,28 or name=28,28.")
@click.option("--seq-len", type=click.IntRange(min=1), default=None, help="Timesteps, for sequence inputs left open.")
@click.option("--unroll", is_flag=True,
              help="TFLite: write LSTM/GRU/SimpleRNN layers out over their fixed timesteps (plain builtin ops that "
                   "XNNPACK runs; no state to reset) instead of the fused LSTM op: NAME_PRECISION-unrolled.tflite, "
                   "for fp32, fp16, dynamic and int8. The number of timesteps is fixed at export.")
@click.option("--opset", type=click.IntRange(*OPSET_RANGE), default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--onnx-quant", type=click.Choice(ONNX_QUANT_RECIPES), default="auto", show_default=True,
              help="ONNX int8 recipe; auto measures both and keeps the best.")
@click.option("--allow-flex", is_flag=True, help="Permit TF (Flex) ops in TFLite. Most runtimes cannot run them.")
@click.option("--check", is_flag=True, help="Only report what would block the export; write nothing.")
@click.option("--unsafe", is_flag=True, help="Load the .keras file with safe mode off (runs code inside it).")
@click.option("--card", type=click.Path(dir_okay=False), default=None,
              help="A model card (TOML) naming calibration data and input scaling. [default: MODEL.card.toml]")
@preprocessing_options
@click.option("--target", default=None, metavar="mcu|BOARD",
              help="Export for a microcontroller: int8 TFLite must use TFLite Micro kernels only (refused otherwise).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the artifacts. [default: MODEL_DIR/exports]")
def export(model, formats, quantize, keep_float, calibration_method, io, calibration, calibration_samples, input_shape,
           seq_len, unroll, opset, onnx_quant, allow_flex, check, unsafe, card, input_scale, input_offset, target, out):
    """Convert MODEL (a .keras file or a training run folder) to TFLite and/or ONNX.

    Each artifact gets a JSON sidecar (sha256, size, I/O tensors and quantization, op counts,
    versions, calibration) and an entry in OUT/artifacts.json.

    \b
    Examples:
      edgedl export runs/cnn --format tflite --quantize int8
      edgedl export runs/lstm --format tflite,onnx --quantize none,fp16,dynamic,int8
      edgedl export my.keras --check
      edgedl export runs/sensor --format tflite,onnx --quantize int8 --keep-float auto
      edgedl export runs/sensor --quantize int16x8
      edgedl export runs/lstm --quantize dynamic,int8 --unroll
    """
    from ..export import ExportOptions, plan_targets, unrolled_targets, with_keep_float
    from ..export import check as preflight
    from ..export import export as run_export

    targets, skipped = plan_targets(csv_list(formats), csv_list(quantize))
    for note in skipped:
        click.echo(f"skipped: {note}", err=True)
    targets = unrolled_targets(targets) if unroll else targets
    layers = csv_list(keep_float) if keep_float else []
    targets = with_keep_float(targets, layers)
    auto = layers == ["auto"]
    options = ExportOptions(io=io, calibration=calibration, calibration_samples=calibration_samples,
                            input_shapes=_parse_shapes(input_shape), seq_len=seq_len, opset=opset,
                            onnx_quant=onnx_quant, allow_flex=allow_flex, unsafe=unsafe, card=card,
                            input_scale=input_scale, input_offset=input_offset, target=_mcu_target(target),
                            keep_float=[] if auto else layers, calibration_method=calibration_method)
    if check:
        report = preflight(model, targets, options)
        for finding in report["findings"]:
            mark = "✓" if finding["level"] == "ok" else "✗"
            fix = f"  → {finding['fix']}" if finding["fix"] else ""
            click.echo(f"{mark} {finding['message']}{fix}")
        if not report["ok"]:
            raise SystemExit(1)
        return
    if auto:
        from ..validate.rescue import export_with_search
        from ..validate.run import ValidateOptions

        declared = ValidateOptions(card=card, input_scale=input_scale, input_offset=input_offset, unsafe=unsafe)
        records = export_with_search(model, targets, out, options, declared, say=lambda m: click.echo(m, err=True))
    else:
        records = run_export(model, targets, out=out, options=options, progress=lambda m: click.echo(m, err=True))
    if records:
        click.echo(f"wrote {len(records)} artifact(s) to {records[0]['out_dir']}")
    else:
        click.echo("wrote nothing: no target needed an artifact (see above)")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(files, as_json):
    """Print I/O tensors, quantization, ops and size of .tflite or .onnx FILES (any, not only ours)."""
    import json

    from ..runners.describe import describe, render

    infos = [describe(f) for f in files]
    click.echo(json.dumps(infos, indent=2) if as_json else "\n\n".join(render(i) for i in infos))


@cli.command()
@click.argument("model", required=False)
@click.argument("artifacts", nargs=-1)
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="An .npz of inputs instead of the run's held-out split: x (or one array per input name) and "
                   "optional labels y (or y_<output name>).")
@click.option("--synthetic", type=click.IntRange(min=1), default=None,
              help="Use N seeded random inputs in the calibration range (weaker evidence).")
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="At most this many samples.")
@setting_option(TOLERANCES["atol"], help="Override the max absolute error allowed.")
@setting_option(TOLERANCES["min_agreement"],
              help="Override the minimum top-1 agreement (0..1).")
@setting_option(TOLERANCES["max_accuracy_drop"],
              help="Override the largest accuracy drop allowed (0..1, e.g. 0.005 = 0.5 pp).")
@click.option("--layers", is_flag=True, help="Also report per-layer drift of int8 artifacts.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Worst layers to list.")
@click.option("--reference", type=click.Path(), default=None,
              help="Compare against a saved reference result (from --save-results) instead of running Keras.")
@click.option("--save-results", type=click.Path(file_okay=False), default=None,
              help="Save every runner's outputs (.npz + .json) here for later comparisons.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Where to write the JSON report (a .md table goes beside it). [default: ARTIFACT_DIR/validation.json]")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report to stdout.")
@click.option("--unsafe", is_flag=True, help="Load the .keras file with safe mode off.")
@click.option("--force", is_flag=True, help="Replace an existing --report that edgedl did not write.")
@tolerance_option
@card_options
def validate(model, artifacts, data, synthetic, samples, atol, min_agreement, max_accuracy_drop, layers, top_k,
             reference, save_results, report, as_json, unsafe, force, tolerances, card, task, labels_file,
             input_scale, input_offset):
    """Prove that exported ARTIFACTS match MODEL (a run folder or .keras file).

    ARTIFACTS are .tflite/.onnx files or folders of them [default: MODEL/exports]. Every output
    of every artifact is measured and judged before the exit code is decided: 0 if all are
    faithful, 1 if any is not, so it serves as a CI gate.

    \b
    Examples:
      edgedl validate runs/cnn
      edgedl validate runs/cnn runs/cnn/exports/cnn_int8.tflite --layers
      edgedl validate runs/cnn --save-results ref/ && edgedl validate --reference ref/reference new.tflite
    """
    from ..validate.matrix import matrix_markdown
    from ..validate.run import ValidateOptions, dumps, failure_message, remedies_hint
    from ..validate.run import validate as run_validate

    if reference and model and not artifacts and not Path(model).is_dir():
        artifacts, model = (model,), None
    options = ValidateOptions(data=data, synthetic=synthetic, samples=samples, atol=atol,
                              min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop, layers=layers,
                              top_k=top_k, reference=reference, save_results=save_results, report=report,
                              unsafe=unsafe, overrides=tolerances, card=card, task=task, labels=labels_file,
                              input_scale=input_scale, input_offset=input_offset, force=force)
    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    summary = run_validate(model, list(artifacts), options, say=say)
    if as_json:
        click.echo(dumps(summary))  # printed whether or not the artifacts pass
    else:
        click.echo("\n" + matrix_markdown(summary["matrix"]))
    failed = failure_message(summary)
    if failed:
        raise ParityFailure(f"{failed}; report: {summary['report_path']}", hint=remedies_hint(summary))
    if not as_json:
        click.echo(f"\nall {len(summary['artifacts'])} artifact(s) faithful; report: {summary['report_path']}")


def remote_options(command):
    """Options of the commands that can run on the user's own devices over SSH (edgedl.deploy.fleet)."""
    options = [
        click.option("--ssh", "ssh_targets", multiple=True, metavar="USER@HOST[:PORT]",
                     help="Run on this Linux device over SSH (repeatable), with your own ssh config, keys and agent. "
                          "Never asks for a password; never skips host-key checking."),
        click.option("--devices", "devices_file", type=click.Path(dir_okay=False), default=None,
                     help="A devices.toml fleet: [[device]] tables with host, user, port, label, python, tmpdir, "
                          "timeout_s, runs, warmup, threads, xnnpack (docs/DEPLOY.md, Your devices)."),
        click.option("--ssh-config", type=click.Path(dir_okay=False), default=None, envvar="EDGEDL_SSH_CONFIG",
                     help="An ssh config file passed as ssh -F (env EDGEDL_SSH_CONFIG). [default: ~/.ssh/config]"),
        click.option("--python", "remote_python", default=None,
                     help="The device's Python, e.g. /home/pi/venv/bin/python. [default: python3]"),
        click.option("--tmpdir", "remote_tmpdir", default=None,
                     help="Folder on the device where edgedl's temporary folder is made. [default: $TMPDIR or /tmp]"),
        click.option("--timeout", "remote_timeout", type=click.FloatRange(min=1), callback=finite, default=None,
                     help="Seconds each step may take on the device. [default: 300]"),
        click.option("--keep", is_flag=True, help="Leave the temporary folder on the device (its path is printed)."),
        click.option("--setup", "remote_setup", is_flag=True,
                     help="First make (or reuse) an edgedl-owned venv on each device, ~/.cache/edgedl/device-venv, "
                          "and pip install the runtime there (ai-edge-litert + numpy; armv7: tflite-runtime 2.14 + "
                          "numpy<2). The device needs its own access to PyPI."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _devices(ssh_targets, devices_file, remote_python, remote_tmpdir, remote_timeout):
    from ..deploy.fleet import load_devices
    from ..deploy.remote import parse_target

    devices = load_devices(devices_file) if devices_file else []
    devices += [parse_target(target) for target in ssh_targets]
    for device in devices:
        if remote_python and (device.python == "python3"):
            device.python = remote_python
        if remote_tmpdir and device.tmpdir is None:
            device.tmpdir = remote_tmpdir
        if remote_timeout:
            device.timeout_s = remote_timeout
    labels = [d.label for d in devices]
    for device in devices:  # two --ssh to one host: tell them apart in the report
        if labels.count(device.label) > 1:
            device.label = device.target
    return devices


def _run_remote(bundle, devices, job, ssh_config, json_out) -> None:
    from ..core.files import write_json
    from ..deploy.fleet import remote_check, side_by_side, summary_lines

    report = remote_check(bundle, devices, job, ssh_config=ssh_config, say=click.echo)
    click.echo("")
    for line in side_by_side(report) + [""] + summary_lines(report):
        click.echo(line)
    if json_out:
        write_json(json_out, report)
    failed = [d for d in report["devices"] if not d["passed"]]
    if failed:
        raise EdgedlError(f"{len(failed)} of {len(report['devices'])} device(s) failed: "
                          + "; ".join(f"{d['label']}: {d.get('error', 'a measurement failed')}" for d in failed))


@cli.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--threads", default=None,
              help="Comma-separated thread counts, e.g. 1,2,4. [default: 1; with --ssh: 1..cores of each device]")
@click.option("--batch", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,8.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True, help="Untimed runs first.")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="Timed runs (instead of --min-time).")
@click.option("--min-time", type=click.FloatRange(min=0), callback=finite, default=1.0, show_default=True,
              help="Seconds of timed runs per measurement (at least 20 runs).")
@click.option("--pin-cpu", default=None, help="Pin each measurement to these CPUs, e.g. 0 or 0,1 (small-device emulation).")
@click.option("--backend", type=click.Choice(["litert", "onnxruntime", "keras"]), default=None,
              help="Force a backend [default: by file suffix].")
@click.option("--no-xnnpack", is_flag=True, help="LiteRT without its default XNNPACK delegate.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write results as JSON (schema: docs/BENCH_SCHEMA.md).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write results as CSV.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="Write PNG plots with this name stem (…_latency.png, …_tradeoff.png).")
@click.option("--force", is_flag=True, help="Replace existing --json/--csv/--plot files that edgedl did not write.")
@remote_options
def bench(artifacts, threads, batch, warmup, runs, min_time, pin_cpu, backend, no_xnnpack, json_out, csv_out,
          plot_out, force, ssh_targets, devices_file, ssh_config, remote_python, remote_tmpdir, remote_timeout, keep,
          remote_setup):
    """Benchmark .tflite/.onnx ARTIFACTS (files or folders; a .keras file is the baseline).

    Each measurement runs in a fresh process that imports only its runtime: init (import +
    load + allocate), first inference, steady-state min/p50/p90/p99/mean/std, throughput, peak
    RSS and its growth over the bare process. Defaults are what a phone or Pi app does: batch 1,
    one thread.

    Each timed call is the runtime's own call (invoke() / run()) on one input set beforehand
    (uniform [0, 1) random values): outputs are not read back. A stateful model (a fused TFLite
    LSTM) has its state reset inside every timed call, as a device pays between independent
    inferences. LSTM latency depends on the input's content (LiteRT skips all-zero vectors).

    With --ssh or --devices, one .tflite ARTIFACT or bundle folder is timed on your own Linux
    devices instead: copied into one temporary folder on each, then fresh `run.py --bench` processes
    measure cold start (process start to first prediction), p50/p90/p99 after warm-up, and peak
    RSS, for threads 1..cores with XNNPACK on and off (--no-xnnpack: off only). Device facts and
    temperature/throttling before and after each run are recorded; a run that throttled or whose
    CPU frequency changed is flagged. The folder is removed afterwards, also on errors and Ctrl-C.

    \b
    Examples:
      edgedl bench runs/cnn/exports/cnn_int8.tflite --threads 1,2
      edgedl bench bundles/cnn_int8 --ssh pi@raspberrypi.local
      edgedl bench bundles/cnn_int8 --devices devices.toml --json bench.json
    """
    _check_bench_outputs(artifacts, json_out, csv_out, plot_out, force)
    if ssh_targets or devices_file:
        import tempfile

        from ..deploy.fleet import Job, artifact_bundle

        if len(artifacts) != 1:
            raise UsageError("with --ssh/--devices, bench times one .tflite file or bundle folder at a time")
        if batch != "1" or pin_cpu or backend:
            raise UsageError("--batch, --pin-cpu and --backend apply to a local benchmark, not to --ssh/--devices "
                             "(the device runs the bundle's run.py: batch 1, LiteRT)")
        devices = _devices(ssh_targets, devices_file, remote_python, remote_tmpdir, remote_timeout)
        job = Job(bundle=Path(artifacts[0]), parity=False, runs=runs or 200, warmup=warmup, keep=keep,
                  setup=remote_setup,
                  threads=int_list(threads, "--threads", minimum=1) or None if threads else None,
                  xnnpack=(False,) if no_xnnpack else (True, False))
        if Path(artifacts[0]).is_dir():
            _run_remote(job.bundle, devices, job, ssh_config, json_out)
            return
        with tempfile.TemporaryDirectory(prefix="edgedl-bench-") as tmp:
            job.bundle = artifact_bundle(artifacts[0], Path(tmp) / Path(artifacts[0]).stem)
            _run_remote(job.bundle, devices, job, ssh_config, json_out)
        return
    threads = threads or "1"
    from rich.console import Console

    from ..bench.render import comparison_lines, plot, render_table, to_csv
    from ..bench.run import BenchOptions
    from ..bench.run import bench as run_bench
    from ..core.files import write_json, write_text

    options = BenchOptions(threads=int_list(threads, "--threads"), batches=int_list(batch, "--batch", minimum=1),
                           warmup=warmup, runs=runs, min_time=min_time, pin_cpu=int_list(pin_cpu, "--pin-cpu") or None,
                           backend=backend, xnnpack=not no_xnnpack)
    result = run_bench(list(artifacts), options, say=lambda m: click.echo(m, err=True))
    Console(width=160).print(render_table(result))
    for line in comparison_lines(result):
        click.echo(line)
    if json_out:
        write_json(json_out, result)
    if csv_out:
        write_text(csv_out, to_csv(result))
    if plot_out:
        for path in plot(result, plot_out):
            click.echo(f"plot: {path}")
    failed = [r for r in result["results"] if "error" in r]
    if failed:
        raise EdgedlError(f"{len(failed)} of {len(result['results'])} measurement(s) failed: "
                          + "; ".join(f"{r['artifact']}: {r['error']}" for r in failed))


def _check_bench_outputs(artifacts, json_out, csv_out, plot_out, force) -> None:
    """Before any measurement: no output lands on an artifact or on a file edgedl did not write."""
    from ..core.outputs import check_output_file

    inputs = [Path(a) for a in artifacts]
    for folder in (p for p in inputs if p.is_dir()):
        inputs += [f for f in folder.iterdir() if f.is_file()]
    stem = Path(plot_out) if plot_out else None
    for path, option in ((json_out, "--json"), (csv_out, "--csv"),
                         *(((stem.with_name(stem.stem + tail), "--plot") for tail in ("_latency.png", "_tradeoff.png"))
                           if stem else ())):
        if path:
            check_output_file(path, inputs, force=force, option=option)


@cli.command()
@click.argument("artifact", type=click.Path())
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Bundle folder to write.")
@click.option("--target", "targets", default="all", show_default=True,
              help="Comma-separated: rpi, android, mcu, or all, plus at most one microcontroller board "
                   "(e.g. all,nano33ble) to fit the mcu/ build to; see `edgedl mcu-check --help` for boards.")
@setting_option(TOLERANCES["min_agreement"], help="Validation override.")
@setting_option(TOLERANCES["max_accuracy_drop"], help="Validation override.")
@tolerance_option
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Held-out data (.npz: x or one array per input, labels y or y_<output>) for a model edgedl did "
                   "not train. [default: the run's held-out split, or the model card's]")
@card_options
@click.option("--verify-on", type=click.Choice(["rpi-emulated"]), default=None,
              help="Then run the bundle on an emulated Raspberry Pi 4 and 5 (see `edgedl device-check`).")
@click.option("--tflm", default=None, type=click.Path(file_okay=False),
              help="With --target BOARD: a TFLite Micro tree; the bundle's mcu/ project is then compiled for the "
                   "board's Cortex-M core and run on an emulated board (`edgedl firmware`). Without a tree or the Arm "
                   "toolchain that check is reported as skipped, never as passed. [default: $EDGEDL_TFLM_ROOT]")
def bundle(artifact, out, targets, min_agreement, max_accuracy_drop, tolerances, data, card, task, labels_file,
           input_scale, input_offset, verify_on, tflm):
    """Package a validated .tflite ARTIFACT for a Raspberry Pi, Android app or microcontroller.

    The artifact is validated first and the bundle is refused if it is not faithful. The bundle
    holds the model, labels.txt, manifest.json (I/O by name, task, quantization, preprocessing,
    state reset, sha256, versions), golden vectors per tensor, the parity report, run.py (Pi, no
    TensorFlow), an Android asset folder and a TFLite Micro C array.

    An artifact exported from a model edgedl did not train needs what a training run would know:
    held-out data (--data), and as needed --labels, --task, --input-scale, or a model card.

    \b
    Examples:
      edgedl bundle runs/cnn/exports/cnn_int8.tflite --out bundles/cnn_int8
      edgedl bundle exports/my_model_int8.tflite --out bundles/mine --data heldout.npz --labels labels.txt
      python bundles/cnn_int8/run.py --self-test
    """
    from ..deploy.bundle import bundle as run_bundle

    overrides = {k: v for k, v in {"min_agreement": min_agreement, "max_accuracy_drop": max_accuracy_drop}.items()
                 if v is not None} | tolerances
    declared = {"data": data, "card": card, "task": task, "input_scale": input_scale, "input_offset": input_offset}
    manifest = run_bundle(artifact, out, labels=labels_file, targets=csv_list(targets), say=click.echo,
                          tolerances=overrides, declared=declared)
    board = (manifest.get("mcu") or {}).get("target")
    if board:
        from ..deploy.firmware import firmware_check

        result = firmware_check(Path(out), board["key"], tflm, say=click.echo)
        if result.get("passed") is False:
            raise EdgedlError(f"firmware: {result.get('error')}")
    if verify_on == "rpi-emulated":
        from ..deploy.device_check import device_check as run_check

        if not run_check(out, say=click.echo)["passed"]:
            raise EdgedlError("the bundle does not behave on the emulated Raspberry Pi as on x86 (see above)")


@cli.command()
@click.argument("recipes", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/pipeline"),
              show_default=True, help="Where runs, exports, bundles and the report go.")
@click.option("--force", is_flag=True, help="Rerun every step, even those whose inputs are unchanged.")
@setting_option(TRAIN["epochs"], help="Override the recipes' epochs (quick runs).")
@setting_option(GATES["max_accuracy_drop"], help="Gate: largest accuracy drop.")
@setting_option(GATES["min_agreement"], help="Gate: least top-1 agreement.")
@setting_option(GATES["max_latency_ms"], help="Gate on p50 latency (ms).")
@setting_option(GATES["max_size_kb"], help="Gate on artifact size (KB).")
@click.option("--bench-time", type=click.FloatRange(min=0), callback=finite, default=1.0, show_default=True,
              help="Seconds of timed runs per artifact.")
@click.option("--no-layers", is_flag=True, help="Skip per-layer drift of int8 artifacts.")
@click.option("--target", default=None, metavar="BOARD",
              help="A microcontroller board (e.g. nano33ble, pico, esp32s3, stm32f446re; `edgedl mcu-check --help`): "
                   "int8 artifacts run under TFLite Micro, the one shipped is the fastest that passes and fits, and "
                   "its bundle's mcu/ folder is sized for the board.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="The Keras backend that trains every recipe (export stays on TensorFlow). "
                   "[default: each recipe's [train] backend, else tensorflow]")
@click.option("--no-rescue", is_flag=True, help="Do not climb the rescue ladder (calibration → keep_float → int16x8 → qat) when "
                                                "an int8 artifact fails its gates.")
@click.option("--tflm", default=None, type=click.Path(file_okay=False),
              help="With --target BOARD: a TFLite Micro tree; the bundle's mcu/ project is then compiled for the "
                   "board's Cortex-M core and run on an emulated board (`edgedl firmware`). Without a tree or the Arm "
                   "toolchain that check is reported as skipped, never as passed. [default: $EDGEDL_TFLM_ROOT]")
@click.option("--unsafe", is_flag=True, help="Let a bare `edgedl pipeline` run recipes found in ./models that import "
                                             "Python code (architecture = \"file.py:function\").")
def pipeline(recipes, out, force, epochs, max_accuracy_drop, min_agreement, max_latency_ms, max_size_kb,
             bench_time, no_layers, target, backend, no_rescue, tflm, unsafe):
    """Train → export → validate → (rescue) → bench → (mcu) → bundle → report, for each RECIPE.

    RECIPES default to the seed models in models/ (mlp, cnn, lstm) on the built-in digits.
    When an int8 artifact fails its gates, the rescue ladder tries int8 with the most faithful
    activation ranges (calibration), keep_float (the fewest float layers), int16x8, then
    quantization-aware fine-tuning, stopping at the first that passes (a recipe's [rescue]
    rungs = [...] chooses). Steps whose inputs (model, data, settings,
    library versions) are unchanged are skipped.
    Exits 1 and names the gate when a gate fails; junit.xml is written for CI systems.

    \b
    Examples:
      edgedl pipeline
      edgedl pipeline models/cnn.toml --epochs 3 --out runs/quick
      edgedl pipeline models/mlp.toml --target nano33ble
    """
    from ..pipeline.gates import failed_gate_message
    from ..pipeline.run import PipelineOptions
    from ..pipeline.run import pipeline as run_pipeline

    options = PipelineOptions(out=out, force=force, epochs=epochs, bench_min_time=bench_time, layers=not no_layers,
                              target=target, rescue=not no_rescue, backend=backend, unsafe=unsafe, tflm=tflm,
                              gates={"max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement,
                                     "max_latency_ms": max_latency_ms, "max_size_kb": max_size_kb})
    summary = run_pipeline(list(recipes), options, say=click.echo)
    click.echo(f"\nreport: {summary['report']}  (and {Path(summary['out']) / 'report.md'})")
    message = failed_gate_message(summary)
    if message:
        raise GateFailure(f"gates failed: {message}")
    click.echo(f"all gates pass ({summary['seconds']:.0f} s)")


@cli.command("device-check")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--profile", "profiles", default="rpi4,rpi5", show_default=True,
              help="Emulated devices: rpi4 (Cortex-A72), rpi5 (Cortex-A76).")
@click.option("--runtime", "runtimes", default="litert,tflite-runtime", show_default=True,
              help="Interpreters to run under: litert (ai-edge-litert, numpy 2), tflite-runtime (2.14, numpy<2).")
@click.option("--samples", type=click.IntRange(min=0), default=100, show_default=True,
              help="Held-out samples to compare, beside the golden vectors.")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Where the emulated userland is kept. [default: ~/.cache/edgedl/rpi-emulated]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@remote_options
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --ssh/--devices: timed runs per measurement.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="With --ssh/--devices: untimed runs before each measurement.")
@click.option("--threads", default=None, help="With --ssh/--devices: thread counts, e.g. 1,4. [default: 1..cores]")
@click.option("--xnnpack", type=click.Choice(["both", "on", "off"]), default="both", show_default=True,
              help="With --ssh/--devices: time with the XNNPACK delegate on, off, or both.")
def device_check(bundle, profiles, runtimes, samples, cache, json_out, ssh_targets, devices_file, ssh_config,
                 remote_python, remote_tmpdir, remote_timeout, keep, remote_setup, runs, warmup, threads, xnnpack):
    """Run BUNDLE on an emulated Raspberry Pi (aarch64, qemu-user), or on your own devices over SSH.

    Emulated (default): sets up (once, cached) a Raspberry Pi OS 64-bit userland from Debian's
    arm64 packages and PyPI's aarch64 wheels, pins the emulated CPU to the Pi's chip, proves the
    emulator on a known int8 model, then runs the bundle's run.py --self-test and its outputs on
    the golden vectors and held-out samples. Needs root (or sudo) once, to apt-get install
    qemu-user-static.

    With --ssh USER@HOST[:PORT] or --devices devices.toml: a preflight on each device (Python,
    numpy, ai-edge-litert or tflite-runtime, arch, free disk; the pip install that fixes what is
    missing), then the bundle is copied into one mktemp folder there; run.py --self-test, outputs on
    the golden and held-out inputs compared with the same runtime on x86, and timed runs (see
    `edgedl bench --help`) with device facts. Devices run concurrently; one that fails is reported
    and the others go on. The folder is removed afterwards, also on errors and Ctrl-C (--keep).

    \b
    Examples:
      edgedl device-check bundles/cnn_int8
      edgedl device-check bundles/cnn_int8 --ssh pi@raspberrypi.local --python /home/pi/venv/bin/python
      edgedl device-check bundles/cnn_int8 --devices devices.toml --json devices.json
    """
    from ..core.files import write_json
    from ..deploy.device_check import device_check as run_check

    if ssh_targets or devices_file:
        from ..deploy.fleet import Job

        if profiles != "rpi4,rpi5" or runtimes != "litert,tflite-runtime":
            raise UsageError("--profile and --runtime choose emulated devices; with --ssh/--devices the device's own "
                             "runtime is used (ai-edge-litert, else tflite-runtime)")
        devices = _devices(ssh_targets, devices_file, remote_python, remote_tmpdir, remote_timeout)
        job = Job(bundle=Path(bundle), runs=runs, warmup=warmup, samples=samples, keep=keep, setup=remote_setup,
                  cache=Path(cache) if cache else None,
                  threads=int_list(threads, "--threads", minimum=1) or None if threads else None,
                  xnnpack={"both": (True, False), "on": (True,), "off": (False,)}[xnnpack])
        _run_remote(bundle, devices, job, ssh_config, json_out)
        click.echo(f"all {len(devices)} device(s) pass")
        return

    report = run_check(bundle, profiles=csv_list(profiles), runtimes=csv_list(runtimes), samples=samples, cache=cache,
                       say=click.echo)
    if json_out:
        write_json(json_out, report)
    if not report["passed"]:
        raise EdgedlError("the bundle does not behave on the emulated device as on x86 (see above)")
    skipped = sum(1 for c in report["checks"] if c.get("skipped"))
    ran = len(report["checks"]) - skipped
    click.echo(f"{ran} emulated check(s) pass" + (f"; {skipped} skipped (see above), not passed" if skipped else ""))


@cli.command("mcu-check")
@click.argument("source", type=click.Path())
@click.option("--target", default=None, metavar="BOARD",
              help="Also judge the fit on this board (e.g. nano33ble, pico, esp32s3, stm32f446re, stm32h743).")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Model-ready inputs (.npz: x or one array per input) for an artifact without a training run.")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Held-out samples to compare, for an artifact (a bundle uses its golden vectors).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
def mcu_check(source, target, data, samples, json_out):
    """Run an int8 .tflite SOURCE (or a bundle) in TFLite Micro's interpreter, and fit it to boards.

    In a child process, with TFLite Micro's own reference kernels: every op must have a kernel;
    outputs are compared with LiteRT's (state reset before each inference); the smallest working
    tensor arena is measured (probes run in forked children: a too-small arena segfaults) and a
    margin added; flash (model + framework + kernels) and RAM (arena + I/O buffers) are estimated
    and checked against each board's SRAM and flash. Exit 1 when a check fails.

    \b
    Examples:
      edgedl mcu-check runs/cnn/exports/cnn_int8.tflite
      edgedl mcu-check bundles/cnn_int8 --target stm32f446re
    """
    from ..core.files import write_json
    from ..deploy.mcu import failure, render
    from ..deploy.mcu import mcu_check as run_check

    report = run_check(source, target=target, data=data, samples=samples, say=click.echo)
    for line in render(report):
        click.echo(line)
    if json_out:
        write_json(json_out, report)
    if not report["passed"]:
        raise EdgedlError(f"{Path(source).name}: {failure(report)}")
    click.echo("all microcontroller checks pass")


@cli.command("firmware")
@click.argument("source", type=click.Path())
@click.option("--core", "core_name", default=None,
              type=click.Choice(["cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55",
                                 "m0plus", "m3", "m4", "m7", "m33", "m55"], case_sensitive=False),
              help="The Cortex-M core to compile for and emulate (cortex-m0plus: micro:bit, m3: mps2-an385, "
                   "m4: mps2-an386, m7: mps2-an500, m33: mps2-an505, m55: mps3-an547).")
@click.option("--target", default=None, metavar="BOARD",
              help="A board (e.g. nano33ble, stm32h743, pico): its core is emulated and its clock used for the "
                   "latency estimate. ESP32's Xtensa cannot be emulated here.")
@click.option("--tflm", default=None, type=click.Path(file_okay=False),
              help="A TFLite Micro tree (create_tflm_tree.py's output, with CMSIS-NN). [default: $EDGEDL_TFLM_ROOT]")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds the emulated board may run before it counts as hung.")
@click.option("--host", is_flag=True,
              help="Instead: build the mcu/ folder's CMakeLists.txt on this machine (cmake, g++, reference kernels, "
                   "the tree's host source list) and run its golden check.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
def firmware(source, core_name, target, tflm, timeout_s, host, json_out):
    """Compile a bundle's mcu/ project for a Cortex-M core and run it on an emulated board.

    SOURCE is a bundle folder (from `edgedl bundle --target mcu`) or its mcu/ folder. The bundle's own
    main.cc, model_data.cc and golden_data.cc are compiled with arm-none-eabi-g++ (-Os, CMSIS-NN
    kernels) against a TFLite Micro tree, linked with newlib's semihosting, and run under
    qemu-system-arm. The TFLite Micro library is compiled once per (tree, core, flags) into
    $XDG_CACHE_HOME/edgedl/tflm (default ~/.cache), only the sources the model needs.

    Prints PASS or FAIL on the golden vectors with the worst int8 step, the arena used on the
    32-bit core, flash and RAM of the linked image split into model, TFLite Micro with its kernels,
    and C library with start-up, and instructions per Invoke (qemu -icount, read through SysTick)
    with a latency estimate at the board's clock. A bundle's manifest and README record the run.
    Exit 1 on FAIL or on any build or emulator fault (the line names the full log).

    Needs: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm

    \b
    Examples:
      edgedl firmware bundles/mlp_int8 --core cortex-m4 --tflm ../tflm-tree
      edgedl firmware bundles/mlp_int8 --target nano33ble
    """
    from ..core.files import write_json
    from ..deploy.firmware import firmware as run_firmware
    from ..deploy.firmware import host_cmake, render

    if host:
        result = host_cmake(source, tflm=tflm, timeout_s=timeout_s, say=click.echo)
        click.echo(f"{'PASS' if result['passed'] else 'FAIL'} on this machine through CMake ({result['compiler']}): worst "
                   f"difference {result['max_steps']} int8 step(s); cmake configure + build {result['cmake_seconds']} s")
        if json_out:
            write_json(json_out, result)
        if not result["passed"]:
            raise EdgedlError(f"the host build's golden check failed (exit {result['exit']}): {result['output']}")
        return
    report = run_firmware(source, core_name=core_name, target=target, tflm=tflm, timeout_s=timeout_s,
                          say=click.echo)
    for line in render(report):
        click.echo(line)
    if json_out:
        write_json(json_out, report)
    if report.get("error"):
        raise EdgedlError(report["error"])
