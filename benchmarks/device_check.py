"""One short check of sktransfer on a CUDA machine: correctness first, then speed.

1. Checks. The tests that touch devices, run by pytest (the device and precision rows of
   the bad-parameter table, tests/test_precision.py, and the docstring examples that fit
   with device="auto", which picks CUDA here; every test pins device="cpu", so no
   setting moves the suite to CUDA). Then direct checks:
   device="auto" runs on CUDA with features equal to the CPU's (max abs. difference
   over max abs. value <= 1e-4; again with TF32 off, to tell TF32 rounding from a bug);
   backend="auto" runs torch on the GPU (ONNX Runtime is for the CPU: nothing exported);
   fp16 and bf16 extraction close to fp32;
   FineTuneClassifier fits one epoch on CUDA
   (fp32 and bf16), predicts, and survives sktransfer.save / load.
2. Extraction speed: efficientnet_lite0 (embedded ImageNet weights), uint8 images at
   224 px, ``transform`` in fp32/fp16/bf16 against a plain loop (model.eval(),
   inference_mode, fp32 NCHW, batch 64, preprocessing on the CPU as sktransfer does it),
   contenders alternated, median of 3 rounds after a warm-up.
3. Fine-tuning speed: one epoch (freeze=0, batch 64) against a hand-written loop.

Prints markdown tables, the GPU, torch and the wall time; exits 1 only if a check failed
(a stage that raises counts as a failed check). Without CUDA it prints one line and
exits 0. The whole run is bounded by --time-limit (a watchdog ends it with a traceback).

    python benchmarks/device_check.py            # about 2 minutes on an H100
    python benchmarks/device_check.py --quick    # 128 images instead of 512

``--force-device cpu`` (hidden) runs every stage on the CPU, fp16 skipped, to test this
script on a machine without a GPU; add ``--quick --n-images 16 --image-size 64`` there.
"""

import argparse
import copy
import faulthandler
import os
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import machine, print_table, race

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's sktransfer, whether installed or not

BATCH = 64
CHECK_IMAGES = 16  # images of 224 px for the feature-agreement checks
FP32_TOLERANCE = 1e-4
HALF_TOLERANCE = {"fp16": 1e-2, "bf16": 5e-2}  # CPU bf16 measured 3.4e-2 (README)
PYTEST_TIMEOUT = 150

# The tests that touch devices or precision (found by grepping tests/ for device=, cuda,
# precision, autocast): all pin device="cpu", except the docstring examples, which fit
# with the default device="auto" and so train and extract on the GPU here.
DEVICE_TEST_FILES = ["tests/test_bad_input.py", "tests/test_precision.py",
                     "sktransfer/_features.py", "sktransfer/_finetune.py",
                     "sktransfer/_persistence.py"]
DEVICE_TEST_KEYWORDS = ("device or precision or fp16 or bf16 or cuda or CNNFeatureExtractor "
                        "or FineTuneClassifier or _persistence")


def relative_difference(features, reference):
    """Largest absolute difference over the largest absolute reference value."""
    return float(np.abs(features - reference).max() / np.abs(reference).max())


def check_row(name, passed, detail):
    return {"check": name, "result": "PASS" if passed else "**FAIL**", "detail": detail}


def guarded(name, function, *args):
    """Run a check stage; an exception becomes one failed row instead of ending the run."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - any error here is a finding to report
        traceback.print_exc()
        return [check_row(name, False, f"raised {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}")]


# -- 1. checks ----------------------------------------------------------------------------

def pytest_checks(device):
    """The device tests through pytest, one row per test (from a JUnit XML report)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if device.type != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""  # "auto" in the doctests must then mean the CPU
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        files = [name for name in DEVICE_TEST_FILES if (REPO / name).exists()]
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "-k", DEVICE_TEST_KEYWORDS, *files]
        try:
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=PYTEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            return [check_row("pytest device tests", False, f"timed out after {PYTEST_TIMEOUT} s")]
        if not report.exists():
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            return [check_row("pytest device tests", False, f"pytest exited {done.returncode}, no report")]
        rows = []
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
        for case in ET.parse(report).iter("testcase"):
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            name = f"pytest {case.get('name')}"
            if case.find("skipped") is not None:
                rows.append({"check": name, "result": "skipped",
                             "detail": case.find("skipped").get("message", "")})
            elif problem is not None:
                message = (problem.get("message") or "failed").splitlines() or ["failed"]
                rows.append(check_row(name, False, message[0][:120]))
            else:
                rows.append(check_row(name, True, f"{float(case.get('time', 0)):.1f} s"))
        if done.returncode not in (0, 1) or not rows:
            rows.append(check_row("pytest device tests", False, f"pytest exited {done.returncode}"))
        return rows


def extraction_checks(device, image_size):
    from sktransfer import CNNFeatureExtractor
    from sktransfer._engine.device import resolve_device

    images = np.random.default_rng(1).integers(
        0, 256, (CHECK_IMAGES, image_size or 224, image_size or 224, 3), dtype=np.uint8)
    settings = dict(image_size=image_size, batch_size=8, progress=False)
    reference = CNNFeatureExtractor(device="cpu", **settings).fit(images[:1]).transform(images)
    rows = []

    # On a CUDA machine, the default device="auto" must be the GPU.
    asked = "auto" if device.type == "cuda" else str(device)
    resolved = resolve_device(asked)
    extractor = CNNFeatureExtractor(device=asked, **settings).fit(images[:1])
    fp32, gpu_bytes = gpu_memory_used(device, lambda: extractor.transform(images))
    on_gpu = device.type == "cuda"
    rows.append(check_row(
        f'device="{asked}" runs on {device.type}',
        resolved.type == device.type and (gpu_bytes > 0 or not on_gpu),
        f"resolves to {resolved}; output {fp32.dtype} {fp32.shape}"
        + (f"; GPU memory taken by transform: {gpu_bytes / 2**20:.0f} MiB" if on_gpu else "")))
    error = relative_difference(fp32, reference)
    rows.append(check_row(
        f"fp32 features vs CPU (<= {FP32_TOLERANCE:g})",
        error <= FP32_TOLERANCE and fp32.dtype == np.float32,
        f"max rel. diff {error:.1e}" + (f"; TF32 in cuDNN convolutions: "
                                        f"{torch.backends.cudnn.allow_tf32} (torch's default)"
                                        if on_gpu else "")))
    if on_gpu:
        rows.append(tf32_off_check(device, images, settings, reference))

    rows.append(check_row(f'backend="auto" on {device.type} runs '
                          f'{"torch" if on_gpu else "onnxruntime"}',
                          extractor._inference.backend == ("torch" if on_gpu else "onnxruntime")
                          and bool(extractor._inference.networks) != on_gpu,
                          f"backend {extractor._inference.backend}; exported parts: "
                          f"{len(extractor._inference.networks)}"))
    for precision in ("fp16", "bf16"):
        name = f"{precision} features vs fp32 (<= {HALF_TOLERANCE[precision]:g})"
        if precision == "fp16" and device.type != "cuda":
            rows.append({"check": name, "result": "skipped", "detail": "fp16 needs CUDA"})
            continue
        half = CNNFeatureExtractor(device=str(device), precision=precision, **settings
                                   ).fit(images[:1]).transform(images)
        error = relative_difference(half, fp32)
        finite = bool(np.isfinite(half).all())
        rows.append(check_row(name, finite and error <= HALF_TOLERANCE[precision],
                              f"max rel. diff {error:.1e}; all finite: {finite}"))
    return rows


def gpu_memory_used(device, run):
    """``run()``'s result and its peak CUDA memory above what was allocated before.

    Above zero only if the work ran on the GPU: the weights are there already, the
    activations are not. Independent of where the estimator keeps its network.
    """
    if device.type != "cuda":
        return run(), 0
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = run()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - before


def tf32_off_check(device, images, settings, reference):
    """fp32 features with TF32 off: separates TF32's rounding from a real difference."""
    from sktransfer import CNNFeatureExtractor

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        features = CNNFeatureExtractor(device=str(device), **settings).fit(images[:1]).transform(images)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    error = relative_difference(features, reference)
    return check_row(f"fp32 features vs CPU, TF32 off (<= {FP32_TOLERANCE:g})",
                     error <= FP32_TOLERANCE, f"max rel. diff {error:.1e}")


def finetune_checks(device):
    import sktransfer
    from sktransfer import FineTuneClassifier

    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, (16, 48, 48, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"] * 8)
    rows = []
    for precision in ("fp32", "bf16"):
        model = FineTuneClassifier(max_epochs=1, early_stopping=False, image_size=64,
                                   batch_size=8, device=str(device), precision=precision,
                                   random_state=0, progress=False).fit(X, y)
        on = {p.device.type for p in model.net_.module_.parameters()}
        loss = model.history_[-1]["train_loss"]
        proba = model.predict_proba(X)
        labels = model.predict(X)
        passed = (on == {device.type} and np.isfinite(loss) and proba.shape == (16, 2)
                  and np.isfinite(proba).all() and np.allclose(proba.sum(1), 1)
                  and set(labels) <= {"cat", "dog"} and len(labels) == 16)
        rows.append(check_row(f"FineTuneClassifier {precision}: 1 epoch, predict", passed,
                              f"weights on {sorted(on)}; train loss {loss:.3f}; "
                              f"proba {proba.shape}, finite: {bool(np.isfinite(proba).all())}"))
        if precision == "fp32":
            with tempfile.TemporaryDirectory() as tmp:
                sktransfer.save(model, Path(tmp) / "model.safetensors")
                loaded = sktransfer.load(Path(tmp) / "model.safetensors")
            difference = float(np.abs(loaded.predict_proba(X) - proba).max())
            rows.append(check_row("FineTuneClassifier fp32: save, load, predict (<= 1e-5)",
                                  difference <= 1e-5, f"max abs. proba diff {difference:.1e}"))
    return rows


# -- 2. extraction speed ----------------------------------------------------------------

def synchronized(device, run):
    def timed():
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result
    return timed


def plain_loop(model, images, mean, std, device):
    """The hand-written baseline: fp32 NCHW batches made on the CPU, then moved over."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            x = torch.from_numpy(images[start:start + BATCH]).permute(0, 3, 1, 2).contiguous()
            x = ((x.float() / 255 - mean) / std).to(device)
            out.append(model(x).mean((2, 3)))
    return torch.cat(out).cpu().numpy()


def extraction_speed(device, images, rounds):
    from sktransfer import CNNFeatureExtractor
    from sktransfer._engine.inference import inference_batch_size

    size = images.shape[1]
    common = dict(image_size=size, device=str(device), progress=False)
    halves = ("fp16", "bf16") if device.type == "cuda" else ("bf16",)
    ours = {"sktransfer fp32": CNNFeatureExtractor(batch_size=BATCH, **common)}
    ours.update({f"sktransfer {p}": CNNFeatureExtractor(batch_size=BATCH, precision=p, **common)
                 for p in halves})
    ours["sktransfer fp32, batch auto"] = CNNFeatureExtractor(**common)
    for extractor in ours.values():
        extractor.fit(images[:1])
    first = ours["sktransfer fp32"]
    model = copy.deepcopy(first.backbone_.blocks).eval().to(device)
    mean = torch.tensor(first.preprocessing_.mean).view(1, 3, 1, 1)
    std = torch.tensor(first.preprocessing_.std).view(1, 3, 1, 1)

    contenders = {"plain loop fp32": lambda: plain_loop(model, images, mean, std, device)}
    contenders.update({name: (lambda e=e: e.transform(images)) for name, e in ours.items()})
    contenders = {name: synchronized(device, run) for name, run in contenders.items()}
    reference = contenders["plain loop fp32"]()
    agreement = {name: relative_difference(run(), reference)
                 for name, run in contenders.items() if name != "plain loop fp32"}
    times = race(contenders, rounds=rounds)
    plain = len(images) / times["plain loop fp32"]
    rows = []
    for name, seconds in times.items():
        speed = len(images) / seconds
        batch = f"auto ({inference_batch_size('auto', first.preprocessing_.input_size)})" \
            if "auto" in name else BATCH
        rows.append({"contender": name, "batch": batch, "img/s": f"{speed:.0f}",
                     "ratio to plain": f"{speed / plain:.2f}x",
                     "max rel. diff to plain": f"{agreement[name]:.1e}" if name in agreement else ""})
    return rows


# -- 3. fine-tuning speed ---------------------------------------------------------------

def hand_training_loop(model, inputs, labels, device):
    """One epoch written by hand: train mode, AdamW, cross-entropy, fp32 NCHW batches."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for start in range(0, len(inputs), BATCH):
        loss = nn.functional.cross_entropy(model(inputs[start:start + BATCH].to(device)),
                                           labels[start:start + BATCH].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def finetune_speed(device, images, rounds):
    from sktransfer import FineTuneClassifier
    from sktransfer._engine.backbones import resolve_backbone
    from sktransfer._engine.images import read_images
    from sktransfer._training.transfer_net import TransferNet

    y = np.arange(len(images)) % 4
    backbone = resolve_backbone("efficientnet_lite0")
    preprocessing = backbone.preprocessing.with_size(images.shape[1])
    inputs = read_images(images).prepare(slice(0, len(images)), preprocessing)
    model = TransferNet(copy.deepcopy(backbone.blocks), 1280, 4, n_frozen=0).to(device)

    def ours(precision):
        return lambda: FineTuneClassifier(
            max_epochs=1, early_stopping=False, freeze=0, batch_size=BATCH,
            image_size=images.shape[1], device=str(device), precision=precision,
            random_state=0, progress=False).fit(images, y)

    contenders = {"hand-written loop fp32": lambda: hand_training_loop(
        model, inputs, torch.as_tensor(y), device)}
    contenders.update({f"FineTuneClassifier {p} (whole fit)": ours(p) for p in ("fp32", "bf16")})
    times = race({name: synchronized(device, run) for name, run in contenders.items()},
                 rounds=rounds)
    hand = times["hand-written loop fp32"]
    return [{"contender": name, "seconds": f"{seconds:.2f}",
             "img/s": f"{len(images) / seconds:.0f}", "time ratio to hand loop": f"{seconds / hand:.2f}x"}
            for name, seconds in times.items()]


# -- driver -----------------------------------------------------------------------------

def describe(device):
    if device.type != "cuda":
        return f"forced device {device} (no GPU timing); {machine()}"
    return (f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; TF32 in cuDNN "
            f"convolutions: {torch.backends.cudnn.allow_tf32}, in matmuls: "
            f"{torch.backends.cuda.matmul.allow_tf32}\nCPU: {machine()}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 images instead of 512")
    parser.add_argument("--n-images", type=int, default=None,
                        help="images for the timings (overrides --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per contender")
    parser.add_argument("--time-limit", type=float, default=230,
                        help="seconds before a watchdog ends the run (exit 1)")
    parser.add_argument("--force-device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # tables survive a watchdog exit, even piped
    if args.force_device is None and not torch.cuda.is_available():
        print(f"device_check: no CUDA device (torch.cuda.is_available() is False), nothing "
              f"to check on {machine()}")
        return 0
    faulthandler.dump_traceback_later(args.time_limit, exit=True)
    started = time.perf_counter()
    device = torch.device(args.force_device or "cuda")
    n_images = args.n_images or (128 if args.quick else 512)
    size = args.image_size or 224
    print(describe(device), flush=True)

    checks = guarded("pytest device tests", pytest_checks, device)
    checks += guarded("extraction checks", extraction_checks, device, args.image_size)
    checks += guarded("fine-tuning checks", finetune_checks, device)
    print_table("checks", checks, ["check", "result", "detail"])

    images = np.random.default_rng(0).integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    stages = [
        (extraction_speed, f"extraction: efficientnet_lite0, {n_images} uint8 images of {size} "
         f"px, median of {args.rounds} alternating rounds after a warm-up",
         ["contender", "batch", "img/s", "ratio to plain", "max rel. diff to plain"]),
        (finetune_speed, f"fine-tuning: one epoch, freeze=0, batch {BATCH}, {n_images} images "
         f"of {size} px, 4 classes, median of {args.rounds} alternating rounds after a warm-up",
         ["contender", "seconds", "img/s", "time ratio to hand loop"]),
    ]
    for stage, title, columns in stages:  # each table printed as soon as it is measured
        rows = guarded(f"{stage.__name__} ran", stage, device, images, args.rounds)
        if "result" in rows[0]:
            checks += rows
            columns = ["check", "result", "detail"]
        print_table(title, rows, columns)

    failures = [row["check"] for row in checks if row.get("result") == "**FAIL**"]
    print(f"\n{describe(device).splitlines()[0]}\ntotal wall time "
          f"{time.perf_counter() - started:.0f} s; {len(checks) - len(failures)} of "
          f"{len(checks)} checks passed or skipped"
          + (f"; FAILED: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
