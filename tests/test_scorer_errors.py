"""Bad input raises a clear ValueError/TypeError; never a crash. The calls that reach
the compiled core run in a child process: a segfault there fails these tests rather
than killing pytest. Calls refused in Python before the core (a None where an array
is required) run in this process."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bad_input_cases
import egal

ALL = {**bad_input_cases.CASES, **bad_input_cases.TORCH_CASES}


@pytest.fixture(scope="module")
def outcomes():
    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, str(here / "bad_input_cases.py")], capture_output=True, text=True,
                          cwd=here, timeout=300)
    assert proc.returncode == 0, f"the bad-input child process died (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(ALL))
def test_bad_input_is_rejected_clearly(outcomes, name):
    _, expected_type, words = ALL[name]
    got_classes, message = outcomes[name]  # the raised class and its bases
    expected = expected_type if isinstance(expected_type, tuple) else (expected_type,)
    assert {t.__name__ for t in expected} & set(got_classes), f"{name}: raised {got_classes[0]}: {message}"
    for word in words:
        assert word in message, f"{name}: message {message!r} does not mention {word!r}"


# A None where an array is required is refused in Python, before anything reaches
# the compiled core, with a TypeError naming the argument (it was an AttributeError).
def _small_call():
    rng = np.random.default_rng(0)
    return dict(activations=rng.random((2, 4, 7, 7), dtype=np.float32), logits=rng.random((2, 3), dtype=np.float32),
                masks=(rng.random((2, 20, 20)) < 0.5).astype(np.uint8),
                gradients=rng.random((2, 4, 7, 7), dtype=np.float32))


@pytest.mark.parametrize("backend", ["auto", "cpu", "reference"])
@pytest.mark.parametrize("name", ["activations", "logits"])
def test_required_array_given_as_none(backend, name):
    if backend == "reference":
        pytest.importorskip("torch")
    kwargs = _small_call()
    kwargs[name] = None
    with pytest.raises(TypeError, match=rf"^{name} must be an array .*got None$"):
        egal.score_batch(**kwargs, backend=backend)


@pytest.mark.parametrize("masks", ["uint8-255", "float-2", "float-nan", "bool-bytes-2"])
def test_every_backend_refuses_a_mask_outside_0_1_with_one_message(masks):
    pytest.importorskip("torch")
    kwargs = _small_call()
    bad = kwargs["masks"].copy()
    bad = {"uint8-255": bad * 255, "float-2": bad.astype(np.float32) * 2,
           "float-nan": np.where(bad > 0, np.nan, 0).astype(np.float32),
           "bool-bytes-2": (bad.astype(np.uint8) * 2).view(np.bool_)}[masks]  # (the reference scored it)
    bad[0] = 0  # the bad values in sample 1 only
    messages = set()
    for backend in ("cpu", "reference"):
        with pytest.raises(ValueError, match=r"masks must hold values in \[0, 1\].*; sample 1 does not") as caught:
            egal.score_batch(**{**kwargs, "masks": bad}, backend=backend)
        messages.add(str(caught.value))
    assert len(messages) == 1


@pytest.mark.parametrize("name", ["activations", "logits"])
def test_reference_scorer_called_directly_with_none(name):
    pytest.importorskip("torch")
    from egal import reference

    kwargs = _small_call()
    kwargs[name] = None
    with pytest.raises(TypeError, match=rf"^{name} must be an array"):
        reference.score_batch(**kwargs)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize(
    "nones, words",
    [
        (dict(gradients=None, weights=None), ["gradients / weights", "got none"]),
        (dict(masks=None, boxes=None, roi=None), ["masks / boxes / roi", "got none"]),
    ],
    ids=["channel-weights", "roi"],
)
def test_optional_arrays_all_none_name_the_choice(backend, nones, words):
    if backend == "reference":
        pytest.importorskip("torch")
    kwargs = {**_small_call(), **nones}
    with pytest.raises(ValueError) as info:
        egal.score_batch(**kwargs, backend=backend)
    for word in words:
        assert word in str(info.value)


def test_project_roi_given_none():
    with pytest.raises(ValueError, match="give exactly one of masks / boxes"):
        egal.project_roi(None, cam_size=(7, 7))


def test_a_grid_larger_than_egal_scores_is_refused_naming_it():
    # A map of 20,000 x 20,000 cells (an image size passed as the map's, or a broadcast view) allocated 6 GB a
    # thread; cam_size=(12000, 12000) passed the side limit.
    huge = np.broadcast_to(np.float32(1), (1, 1, 20000, 20000))
    with pytest.raises(ValueError, match=r"activations of shape \(1, 1, 20000, 20000\) gives a Grad-CAM grid of "
                                         r"20000 x 20000 = 400,000,000 cells, more than egal scores \(4,194,304"):
        egal.score_batch(huge, np.zeros((1, 2), np.float32), np.zeros((1, 8, 8), np.uint8),
                         weights=np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match=r"cam_size=\(12000, 12000\) gives a Grad-CAM grid of 12000 x 12000"):
        egal.project_roi(np.zeros((1, 8, 8), np.uint8), cam_size=(12000, 12000))


def test_memory_that_cannot_be_had_inside_the_parallel_scorer_is_a_memory_error_not_an_abort():
    # An allocation failing inside an OpenMP region called std::terminate: the interpreter aborted (SIGABRT).
    # Here the process's address space is capped just above what it uses, and a grid within egal's limit needs
    # more scratch per thread than is left.
    script = """
import resource, numpy as np, egal
masks = np.zeros((2, 8, 8), np.uint8)
call = lambda A: egal.score_batch(A, np.zeros((2, 2), np.float32), masks, weights=np.ones((2, 1), np.float32))
call(np.ones((2, 1, 7, 7), np.float32))  # the OpenMP threads started
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (40 << 20), resource.RLIM_INFINITY))
for work in (lambda: call(np.broadcast_to(np.float32(1), (2, 1, 2048, 2048))),
             lambda: egal.project_roi(masks, cam_size=(2048, 2048))):
    try:
        work()
        print("scored")
    except MemoryError:
        print("MemoryError")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["MemoryError", "MemoryError"]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_a_roi_size_that_differs_from_the_projected_rois_is_refused(backend):
    pytest.importorskip("torch")
    kwargs = _small_call()
    roi = egal.project_roi(kwargs.pop("masks"), cam_size=(7, 7))
    egal.score_batch(**kwargs, roi=roi, roi_size=(20, 20), backend=backend)  # the same grid: fine
    with pytest.raises(ValueError, match=r"roi_size=\(5, 5\) differs from the roi's own \(20, 20\)"):
        egal.score_batch(**kwargs, roi=roi, roi_size=(5, 5), backend=backend)


def test_a_projected_roi_indexed_by_one_integer_says_how_to_keep_the_batch_axis():
    roi = egal.project_roi(np.ones((3, 8, 8), np.uint8), cam_size=(7, 7))
    assert len(roi[1:2]) == 1 and len(roi[np.array([0, 2])]) == 2
    with pytest.raises(TypeError, match=r"indexed by rows that keep its batch axis: roi\[1:2\], not roi\[1\]"):
        roi[1]


def test_a_projected_roi_of_another_batch_says_so_not_to_project_again():
    # A slicing mistake (roi[:1] for a batch of 2) was told to "project it with cam_size=(7, 7)", which it was.
    kwargs = _small_call()
    roi = egal.project_roi(kwargs.pop("masks"), cam_size=(7, 7))
    with pytest.raises(ValueError, match=r"roi holds 1 sample\(s\) but the batch has 2: slice the ProjectedROI"):
        egal.score_batch(**kwargs, roi=roi[:1])
