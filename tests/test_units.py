"""Pure functions, tested alone: recipes and settings, gates, recommendation, Pareto front, step cache,
output alignment, the HTML report writer, run-folder layout and metrics. No TensorFlow, no runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedl.core import layout, metrics
from edgedl.core.errors import UsageError
from edgedl.export.plan import parse_targets, plan_targets
from edgedl.pipeline.cache import StepCache, step_key
from edgedl.pipeline.gates import failed_gate_message, judge_gates, recommend
from edgedl.pipeline.report import pareto_front
from edgedl.recipe import DEFAULT_TARGETS, TRAIN_SETTINGS, load_recipe, train_config
from edgedl.validate.parity import align_outputs

# ---------------------------------------------------------------- recipes and settings

def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_load_recipe_reads_every_table(tmp_path):
    path = _recipe(tmp_path, '[model]\nname = "tiny"\narchitecture = "mlp"\n[data]\nsource = "digits8x8"\nseed = 3\n'
                             '[train]\nepochs = 4\n[export]\ntargets = ["tflite:int8"]\ncalibration_samples = 32\n'
                             '[gates]\nmin_agreement = 0.98\n')
    recipe = load_recipe(path)
    assert (recipe.name, recipe.architecture, recipe.data, recipe.seed) == ("tiny", "mlp", "digits8x8", 3)
    assert recipe.train == {"epochs": 4} and recipe.targets == ["tflite:int8"]
    assert recipe.calibration_samples == 32 and recipe.gates == {"min_agreement": 0.98}
    assert recipe.calibration_method == "minmax"  # the converters' own default unless a recipe asks


def test_load_recipe_defaults_and_name_from_file(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, '[model]\narchitecture = "cnn"\n'))
    assert recipe.name == "r" and recipe.targets == DEFAULT_TARGETS and recipe.data == "digits"


@pytest.mark.parametrize("text, words", [
    ('[model]\nname = "x"\n', "needs exactly one of [model] architecture"),
    ('[model]\narchitecture = "mlp"\nkeras = "m.keras"\n', "needs exactly one of"),
    ('[model]\narchitecture = "mlp"\n[train]\nepoch = 3\n', "unknown 'epoch' .did you mean 'epochs'"),
    ('[model]\narchitecture = "mlp"\n[gates]\nmax_size = 3\n', "unknown 'max_size' .did you mean 'max_size_kb'"),
    ('[model\n', "not valid TOML"),
    ('[model]\narchitecture = "mlp"\n[train]\nepochs = "5"\n', "epochs must be a whole number in .1, 100,000., got '5'"),
    ('[model]\narchitecture = "mlp"\n[train]\nlearning_rate = inf\n', "learning_rate must be a finite number > 0"),
    ('[model]\narchitecture = "mlp"\n[data]\nseed = -1\n', "seed must be in .0, 4,294,967,295., got -1"),
    ('[model]\narchitecture = "mlp"\n[gates]\nmin_agreement = "high"\n', "min_agreement must be a finite number in [0, 1]"),
    ('[model]\narchitecture = "mlp"\n[gates]\nmax_accuracy_drop = 5\n', "max_accuracy_drop must be in [0, 1], got 5"),
    ('[model]\narchitecture = 3\n', "[model] architecture must be a non-empty string"),
    ('[model]\narchitecture = "mlp"\n[export]\ntargets = "tflite"\n', "targets must be a list of strings"),
])
def test_load_recipe_refuses_bad_recipes(tmp_path, text, words):
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(_recipe(tmp_path, text))


def test_train_config_explicit_options_win_over_the_recipe(tmp_path):
    path = _recipe(tmp_path, '[model]\nname = "tiny"\narchitecture = "mlp"\n[data]\nseed = 5\n'
                             '[train]\nepochs = 4\nbatch_size = 16\n')
    config = train_config(recipe=str(path), epochs=9, strategy="none")
    assert config.model == "mlp" and config.epochs == 9 and config.batch_size == 16
    assert config.seed == 5 and config.out == Path("runs/tiny") and config.strategy == "none"
    assert train_config(recipe=str(path), seed=0).seed == 0  # an explicit 0 is not "unset"


def test_train_config_without_recipe():
    config = train_config(model="lstm")
    assert config.out == Path("runs/lstm") and config.data == "digits"
    assert all(getattr(config, key) is None for key in TRAIN_SETTINGS)  # the architecture decides later
    assert train_config("cnn").model == "cnn"  # `edgedl train cnn` means --model cnn
    assert train_config(model="my_arch.py:build").out == Path("runs/my_arch")


# ---------------------------------------------------------------- gates and recommendation

def _validation(*rows):
    return {"matrix": [dict(artifact=a, format=a.rsplit(".", 1)[1], precision=p, size=s, agreement=ag,
                            accuracy_delta=d, verdict=v) for a, p, s, ag, d, v in rows]}


def _bench(*rows):
    return {"results": [{"artifact": a, "threads": 1, "batch": 1, "p50_us": p50, "p99_us": p50 * 2}
                        for a, p50 in rows]}


VALIDATION = _validation(("m_fp32.tflite", "fp32", 4000, 1.0, 0.0, "pass"),
                         ("m_int8.tflite", "int8", 1000, 0.995, -0.004, "pass"),
                         ("m_dynamic.tflite", "dynamic", 1100, 0.999, 0.0, "pass"),
                         ("m_fp32.onnx", "fp32", 4000, 1.0, 0.0, "pass"),
                         ("m_fp16.tflite", "fp16", 2000, 0.9, -0.02, "FAIL"))
BENCH = _bench(("m_fp32.tflite", 100.0), ("m_int8.tflite", 40.0), ("m_dynamic.tflite", 38.0),
               ("m_fp32.onnx", 10.0), ("m_fp16.tflite", 5.0))


def test_recommend_picks_the_fastest_faithful_tflite_and_smaller_wins_a_near_tie():
    # fp16 is fastest but fails parity; ONNX is faster but not TFLite; int8 is within 10 % of
    # dynamic and smaller, so it wins.
    assert recommend(VALIDATION, BENCH) == "m_int8.tflite"
    slower_int8 = _bench(("m_int8.tflite", 60.0), ("m_dynamic.tflite", 38.0))
    assert recommend(VALIDATION, slower_int8) == "m_dynamic.tflite"
    assert recommend(_validation(("m_fp16.tflite", "fp16", 1, 1.0, 0.0, "FAIL")), BENCH) is None
    assert recommend(VALIDATION, None) is None  # nothing measured: nothing to ship


def test_recommend_for_a_microcontroller_takes_only_int8_that_passes_and_fits():
    # dynamic is fastest on the host but TFLite Micro cannot run it; of two int8 artifacts the one that
    # does not fit the board is out, whatever its speed.
    validation = _validation(("m_int8.tflite", "int8", 1000, 0.995, 0.0, "pass"),
                             ("m_dynamic.tflite", "dynamic", 1100, 0.999, 0.0, "pass"),
                             ("big_int8.tflite", "int8", 9000, 0.999, 0.0, "pass"))
    bench = _bench(("m_int8.tflite", 40.0), ("m_dynamic.tflite", 5.0), ("big_int8.tflite", 1.0))
    mcu = {"m_int8.tflite": {"passed": True, "seconds_per_inference": 0.002},
           "big_int8.tflite": {"passed": False, "seconds_per_inference": 0.001, "why": "does not fit"}}
    assert recommend(validation, bench, mcu) == "m_int8.tflite"
    assert recommend(validation, bench, {}) is None  # no int8 artifact checked: nothing ships to the board
    assert recommend(validation, bench) == "big_int8.tflite"  # without a board, the host's fastest


def test_board_table_holds_datasheet_memory_and_judges_fit_with_headroom():
    from edgedl.deploy.boards import BOARDS, board, fit

    # SRAM and flash (KB) of the boards the issue names, from their datasheets
    for key, sram, flash in (("nano33ble", 256, 1024), ("pico", 264, 2048), ("esp32s3", 512, 8192),
                             ("stm32f446re", 128, 512), ("stm32h743", 1024, 2048), ("nrf5340", 512, 1024)):
        assert (BOARDS[key].sram_kb, BOARDS[key].flash_kb) == (sram, flash), key
    assert len(BOARDS) >= 8 and all(b.source for b in BOARDS.values())
    f401 = board("STM32F401RE")
    assert f401.usable_flash == (512 - 32) * 1024 and f401.usable_ram == (96 - 8) * 1024
    verdict = fit(40_000, f401.usable_flash + 1, f401)
    assert not verdict["fits"] and verdict["flash_headroom"] == -1 and verdict["ram_headroom"] == f401.usable_ram - 40_000
    assert fit(40_000, 100_000, f401)["fits"]
    assert BOARDS["stm32l476rg"].usable_ram == (96 - 8) * 1024  # the arena must fit one contiguous block
    with pytest.raises(UsageError, match="unknown board 'uno'"):
        board("uno")


def test_check_gates_names_each_failure():
    gates = {"max_accuracy_drop": 0.003, "min_agreement": 0.99, "max_latency_ms": 0.05, "max_size_kb": 2}
    results = judge_gates(gates, VALIDATION, BENCH)
    failed = {(g["gate"], g["artifact"]) for g in results if not g["passed"]}
    assert failed == {("max_accuracy_drop", "m_int8.tflite"), ("max_latency_ms", "m_fp32.tflite"),
                      ("max_size_kb", "m_fp32.tflite"), ("max_size_kb", "m_fp32.onnx"),
                      ("max_accuracy_drop", "m_fp16.tflite"), ("min_agreement", "m_fp16.tflite"),
                      ("parity", "m_fp16.tflite")}
    detail = next(g["detail"] for g in results if g["gate"] == "max_accuracy_drop" and not g["passed"])
    assert detail == "m_int8.tflite: accuracy drop 0.40 pp (limit 0.30 pp)"
    assert all(g["passed"] for g in judge_gates({}, VALIDATION, BENCH) if g["artifact"] != "m_fp16.tflite")


def test_failed_gate_message():
    summary = {"recipes": [{"name": "m", "gates": judge_gates({}, VALIDATION, BENCH), "errors": ["bundle: x"]}]}
    assert failed_gate_message(summary) == "m: parity (m_fp16.tflite: parity FAIL); m: bundle: x"
    assert failed_gate_message({"recipes": [{"name": "m", "gates": [], "errors": []}]}) is None


def test_pareto_front():
    points = [(10, 90), (20, 95), (15, 80), (30, 95), (5, 70)]
    assert pareto_front(points) == [4, 0, 1]  # by latency; (15, 80) and (30, 95) are dominated
    assert pareto_front([(1, 1), (1, 1)]) == [0, 1]  # equal points do not dominate each other


# ---------------------------------------------------------------- step cache

def test_step_cache_reruns_on_new_inputs_missing_outputs_or_force(tmp_path):
    output = tmp_path / "out.bin"
    output.write_text("x")
    cache = StepCache(tmp_path, force=False)
    key = step_key("train", {"epochs": 1})
    assert cache.fresh("train", key) is None
    cache.record("train", key, [str(output)], 1.5, {"ok": True})
    again = StepCache(tmp_path, force=False)  # read back from steps.json
    assert again.fresh("train", key)["result"] == {"ok": True}
    assert again.fresh("train", step_key("train", {"epochs": 2})) is None
    assert StepCache(tmp_path, force=True).fresh("train", key) is None
    output.write_text("edited")  # same name, other bytes: the step reruns
    assert StepCache(tmp_path, force=False).fresh("train", key) is None
    output.write_text("x")
    assert StepCache(tmp_path, force=False).fresh("train", key) is not None
    output.unlink()
    assert StepCache(tmp_path, force=False).fresh("train", key) is None
    assert json.loads((tmp_path / "steps.json").read_text())["edgedl"] == "pipeline-state/2"


def test_step_key_is_stable_and_order_free():
    assert step_key({"a": 1, "b": 2}) == step_key({"b": 2, "a": 1})
    assert step_key("x", 1) != step_key("x", 2)


# ---------------------------------------------------------------- validation helpers

def test_align_outputs_by_name_then_by_shape():
    a, b = np.zeros((2, 3)), np.zeros((2, 1))
    assert align_outputs(["cls", "reg"], [(2, 3), (2, 1)], [b, a], ["reg", "cls"])[1] == ["cls", "reg"]
    outputs, names = align_outputs(["cls", "reg"], [(2, 3), (2, 1)], [b, a], ["StatefulCall:1", "StatefulCall:0"])
    assert outputs[0] is a and names == ["StatefulCall:0", "StatefulCall:1"]
    tflite = align_outputs(["cls", "reg"], [(2, 3), (2, 1)], [b, a], ["output_1", "output_0"])
    assert tflite[0][0] is a and tflite[1] == ["output_0", "output_1"]  # TFLite's output_i is Keras output i
    same = [np.zeros((2, 3)), np.ones((2, 3))]
    assert align_outputs(["x", "y"], [(2, 3), (2, 3)], same, ["p", "q"])[1] == ["p", "q"]  # ambiguous: as given


# ---------------------------------------------------------------- layout and metrics

def test_layout_names_and_precision(tmp_path):
    artifact = tmp_path / "mlp_int8.tflite"
    artifact.write_bytes(b"x")
    assert layout.precision_of(artifact) == "int8"
    layout.sidecar_path(artifact).write_text(json.dumps({"precision": "dynamic"}))
    assert layout.precision_of(artifact) == "dynamic"  # the sidecar outranks the name
    assert layout.precision_of(tmp_path / "model.tflite", {}) is None
    assert layout.model_key("cnn_int8.tflite") == "cnn.tflite"
    assert layout.model_key("cnn_int8-calibrated.tflite") == "cnn.tflite"  # a tagged variant groups with its model
    assert layout.model_key("my_fp32_net_int8.onnx") == "my_fp32_net.onnx"  # only the tail is the precision
    assert layout.format_of("a.ONNX") == "onnx"
    with pytest.raises(UsageError, match="unknown artifact type .pb"):
        layout.format_of("m.pb")
    (tmp_path / "notes.txt").write_text("")
    assert layout.find_artifacts([tmp_path]) == [artifact]


def test_activation_ranges_clip_outliers_and_primed_histograms_stay_small():
    from edgedl.export.ranges import BINS, collector, computed_ranges, most_faithful

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=512).astype(np.float32) for _ in range(60)]  # 1 in 30,720: under 0.005 %
    batches[-1][0] = 60.0  # one outlier, seen last: min/max would spend the int8 grid on it
    low, high = min(b.min() for b in batches), max(b.max() for b in batches)
    for method in ("entropy", "percentile"):
        histograms = collector(method, {"t": (float(low), float(high))})
        for b in batches:
            histograms.collect({"t": b})
        assert len(histograms.histogram_dict["t"][0]) == BINS, "primed with the known range: no growth"
        clipped = computed_ranges(histograms)["t"]
        assert low <= clipped[0] < 0 < clipped[1] < 10, (method, clipped)
    unprimed = collector("entropy")
    for b in batches:
        unprimed.collect({"t": b})
    assert len(unprimed.histogram_dict["t"][0]) > 4 * BINS, "what priming prevents"
    scores = {"minmax": {"agreement": 0.98, "sqnr_db": 30.0}, "entropy": {"agreement": 0.99, "sqnr_db": 20.0},
              "percentile": {"agreement": 0.99, "sqnr_db": 25.0}}
    assert most_faithful(scores) == "percentile"  # agreement first, then SQNR


def test_metrics():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    cand = np.array([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    assert metrics.agreement(ref, cand) == pytest.approx(2 / 3)
    assert metrics.accuracy(ref, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    sequence = np.zeros((1, 3, 2))
    sequence[0, -1, 1] = 1  # a sequence decides on its last step
    assert metrics.top1(sequence).tolist() == [1]
    assert metrics.sqnr_db(ref, ref) == float("inf")
    assert metrics.sqnr_db(np.ones(4), np.ones(4) * 1.1) == pytest.approx(20.0)
    assert metrics.is_classification(ref) and not metrics.is_classification(np.zeros((3, 1)))


def test_export_targets():
    with pytest.raises(UsageError, match="choose from"):
        plan_targets(["tflite"], ["int4"])
    targets, skipped = plan_targets(["onnx"], ["none", "fp16"])
    assert [t.label for t in targets] == ["onnx fp32"] and "no fp16" in skipped[0]
    assert [t.label for t in parse_targets(["tflite:int8", "onnx"])] == ["tflite int8", "onnx fp32"]
    with pytest.raises(UsageError, match="target 'onnx:fp16'"):
        parse_targets(["onnx:fp16"])


def test_an_artifact_larger_than_its_fp32_says_so_and_why():
    from edgedl.export.run import size_notes

    records = [{"file": "m_fp32.onnx", "format": "onnx", "precision": "fp32", "size": 1000},
               {"file": "m_int8.onnx", "format": "onnx", "precision": "int8", "size": 1400},
               {"file": "m_fp16.tflite", "format": "tflite", "precision": "fp16", "size": 900},
               {"file": "m_fp32.tflite", "format": "tflite", "precision": "fp32", "size": 800}]
    notes = size_notes(records)
    assert len(notes) == 2 and "m_int8.onnx (1,400 B) is not smaller" in notes[0] and "QuantizeLinear" in notes[0]
    assert "m_fp16.tflite" in notes[1] and "DEQUANTIZE" in notes[1]


def test_an_unrolled_variant_is_compared_with_its_own_float32():
    from edgedl.bench.render import comparison_lines
    from edgedl.bench.run import compare_precisions

    def row(name, precision, p50, size):
        return {"artifact": name, "precision": precision, "p50_us": p50, "size": size, "backend": "litert",
                "threads": 1, "batch": 1}

    rows = [row("m_fp32.tflite", "fp32", 90.0, 100), row("m_dynamic.tflite", "dynamic", 80.0, 30),
            row("m_fp32-unrolled.tflite", "fp32", 60.0, 150), row("m_dynamic-unrolled.tflite", "dynamic", 30.0, 87)]
    by_artifact = {c["artifact"]: c for c in compare_precisions(rows)}
    assert by_artifact["m_dynamic.tflite"]["base"] == "m_fp32.tflite"
    assert by_artifact["m_dynamic-unrolled.tflite"]["base"] == "m_fp32-unrolled.tflite"
    assert by_artifact["m_dynamic-unrolled.tflite"]["speedup_vs_fp32"] == 2.0
    lines = comparison_lines({"comparisons": list(by_artifact.values())})
    assert "m_dynamic-unrolled.tflite is 2.00× the speed of m_fp32-unrolled.tflite at 0.58× the size" in lines[1]
    assert len(lines) == 2  # the float32 bases are not compared with themselves


# ---------------------------------------------------------------- training augmentation

def _digit_like(count: int = 4, side: int = 28) -> np.ndarray:
    rng = np.random.default_rng(3)
    images = np.zeros((count, side, side, 1), np.uint8)
    images[:, 8:20, 10:18] = rng.integers(100, 256, (count, 12, 8, 1))
    return images


def test_affine_warp_samples_the_image_where_the_matrix_says(monkeypatch):
    from edgedl.train import augment

    images = _digit_like()
    identity = np.tile(np.eye(2), (len(images), 1, 1))
    monkeypatch.setattr(augment, "_warp_matrices", lambda count, rng: identity[:count])
    assert np.array_equal(augment._affine_images(images, np.random.default_rng(0), 0), images)
    quarter = np.tile(np.array([[0.0, 1.0], [-1.0, 0.0]]), (len(images), 1, 1))  # source (y, x) = (x, -y)
    monkeypatch.setattr(augment, "_warp_matrices", lambda count, rng: quarter[:count])
    turned = augment._affine_images(images, np.random.default_rng(0), 0)
    assert np.array_equal(turned, np.rot90(images, k=1, axes=(1, 2)))  # out[i, j] = in[j, n-1-i]


def test_affine_augmentation_warps_every_image_a_little_and_repeats_for_a_seed():
    from edgedl.train.augment import shift_batch

    images = _digit_like(16)
    warped = shift_batch(images, np.random.default_rng(7), "affine")
    assert warped.shape == images.shape and warped.dtype == images.dtype
    assert all(not np.array_equal(a, b) for a, b in zip(warped, images, strict=True))
    ink = warped.reshape(16, -1).sum(1) / images.reshape(16, -1).sum(1)
    assert ink.min() > 0.7 and ink.max() < 1.4  # ±10 % scale and a small turn keep the digit inside the frame
    assert np.array_equal(warped, shift_batch(images, np.random.default_rng(7), "affine"))
    flat = shift_batch(images.reshape(16, -1).astype(np.float32), np.random.default_rng(7), "affine")
    assert np.allclose(flat.reshape(warped.shape), warped, atol=0.5)  # an MLP's flat rows are warped as images
