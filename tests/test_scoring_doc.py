"""docs/scoring.md's worked example, checked so that the page cannot drift.

The `name = value` lines in the fenced blocks of its "Worked example" section are
parsed. The inputs go to the float64 oracle (tests/scoring_f64.py) and to the fused
scorer (`egal.score_batch`), and every other written value must equal the oracle's, to
the digits written. The page must also state the constants and rules of the project's
shared SCORING.md, and the oracle and the reference scorer must use them.
"""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

import egal
import scoring_f64

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scoring.md"
SHARED = ROOT.parent / "shared" / "SCORING.md"  # the project's page, outside the repository
NUMBER = re.compile(r"nan|-?\d+(?:\.\d+)?")
INPUTS = {"A0", "A1", "G0", "G1", "Z", "M", "boxes", "alpha"}


def _section(text, heading):
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _parse_example():
    """{name: (float64 array, [number tokens as written])} from the worked example's blocks."""
    section = _section(DOC.read_text(), "Worked example")
    values = {}
    for block in re.findall(r"```text\n(.*?)```", section, flags=re.S):
        entries = []
        for line in block.splitlines():
            match = re.match(r"^(\w+) = (.*)$", line)
            if match:
                entries.append([match.group(1), match.group(2)])
            elif line.strip():
                assert entries, f"a value line before any name: {line!r}"
                entries[-1][1] += " " + line.strip()  # a matrix written over several lines
        for name, text in entries:
            assert name not in values, f"{name} is written twice"
            array = np.array(ast.literal_eval(re.sub(r"\bnan\b", "None", text)), dtype=np.float64)
            tokens = NUMBER.findall(text)
            assert len(tokens) == array.size, f"{name}: cannot read {text!r}"
            values[name] = (array, tokens)
    return values


DOC_VALUES = _parse_example()


def _doc(name):
    return DOC_VALUES[name][0]


def _inputs():
    A = np.stack([_doc("A0"), _doc("A1")])[None]  # [1, K, h, w]
    G = np.stack([_doc("G0"), _doc("G1")])[None]
    return A, G, _doc("Z")[None], _doc("M")[None], _doc("boxes")[None], float(_doc("alpha"))


def _expected():
    """Every written value but the inputs, recomputed from the inputs in float64."""
    A, G, Z, M, boxes, alpha = _inputs()
    H, W = M.shape[1:]
    h, w = A.shape[2:]
    steps = scoring_f64.steps(A, Z, M, gradients=G, alpha=alpha)
    lo, hi, t = scoring_f64._axis(H, h)
    Ry, Rx = scoring_f64.upsample_operator(H, h), scoring_f64.upsample_operator(W, w)
    z = Z[0]
    e = np.exp(z - z.max())
    no_roi = scoring_f64.steps(A, Z, np.zeros_like(M), gradients=G, alpha=alpha)
    flat = scoring_f64.steps(A, Z, M, gradients=np.zeros_like(G), alpha=alpha)
    return {
        "w": steps["channel_weights"][0],
        "raw": steps["raw"][0],
        "relu": steps["relu"][0],
        "lo": steps["lo"][0],
        "hi": steps["hi"][0],
        "denominator": steps["hi"][0] - steps["lo"][0] + scoring_f64.NORM_EPS,
        "cam": steps["cam"][0],
        "s": np.maximum((np.arange(H) + 0.5) * h / H - 0.5, 0.0),
        "y0": lo,
        "y1": hi,
        "t": t,
        "relu_up": scoring_f64.upsample(steps["relu"], H, W)[0],
        "U": steps["U"][0],
        "I": steps["I"][0],
        "SU": steps["SU"][0],
        "SM": steps["SM"][0],
        "D": steps["misalignment"][0],
        "col_sum": Ry.sum(axis=0),
        "P": Ry.T @ M[0] @ Rx,
        "z_max": z.max(),
        "e": e,
        "total": e.sum(),
        "log_p": steps["log_p"][0],
        "p": steps["p"][0],
        "H": steps["entropy"][0],
        "H_norm": steps["entropy_norm"][0],
        "pred": steps["pred"][0],
        "S": steps["score"][0],
        "D_no_roi": no_roi["misalignment"][0],
        "S_no_roi": no_roi["score"][0],
        "D_flat": flat["misalignment"][0],
        "S_flat": flat["score"][0],
        "S_alpha0": scoring_f64.steps(A, Z, M, gradients=G, alpha=0.0)["score"][0],
        "S_alpha1": scoring_f64.steps(A, Z, M, gradients=G, alpha=1.0)["score"][0],
    }


EXPECTED = _expected()


def test_every_written_value_is_checked():
    assert set(DOC_VALUES) == INPUTS | set(EXPECTED)


def test_the_example_is_the_small_one_described():
    A, G, Z, M, boxes, alpha = _inputs()
    assert A.shape == G.shape == (1, 2, 2, 2) and Z.shape == (1, 3) and M.shape == (1, 4, 4) and alpha == 0.5


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_written_value_matches_the_float64_oracle(name):
    written, tokens = DOC_VALUES[name]
    expected = np.asarray(EXPECTED[name], dtype=np.float64)
    assert written.shape == expected.shape, f"{name}: written with shape {written.shape}, is {expected.shape}"
    for token, value in zip(tokens, expected.ravel(), strict=True):
        if token == "nan":
            assert np.isnan(value), f"{name}: written nan, is {value!r}"
            continue
        assert not np.isnan(value), f"{name}: written {token}, is nan"
        if abs(float(token) - value) <= 1e-12 * max(1.0, abs(value)):
            continue  # exact as written
        decimals = len(token.partition(".")[2])
        assert decimals >= 8, f"{name}: {token} is not exact ({value!r}); write it to 10 decimals"
        assert abs(float(token) - value) <= 0.5 * 10.0**-decimals * (1 + 1e-6), (
            f"{name}: written {token}, is {value:.12f}"
        )


def test_the_box_is_the_mask():
    _, _, _, M, boxes, _ = _inputs()
    np.testing.assert_array_equal(scoring_f64.rasterise(boxes, *M.shape[1:]), M)


def _fused(**overrides):
    A, G, Z, M, boxes, alpha = _inputs()
    kwargs = dict(activations=A.astype(np.float32), logits=Z.astype(np.float32), masks=M.astype(np.uint8),
                  gradients=G.astype(np.float32), alpha=alpha, return_cam=True)
    kwargs.update(overrides)
    return egal.score_batch(**kwargs)


def _assert_fused_matches(result, D, S, atol=1e-6):
    assert result.pred[0] == EXPECTED["pred"]
    np.testing.assert_allclose(result.entropy[0], EXPECTED["H"], rtol=0, atol=atol)
    np.testing.assert_allclose(result.entropy_norm[0], EXPECTED["H_norm"], rtol=0, atol=atol)
    np.testing.assert_allclose(result.misalignment[0], D, rtol=0, atol=atol, equal_nan=True)
    np.testing.assert_allclose(result.score[0], S, rtol=0, atol=atol)


def _roi_forms():
    _, _, _, M, boxes, _ = _inputs()
    H, W = M.shape[1:]
    return {
        "masks": {},
        "bool-masks": dict(masks=M.astype(bool)),
        "float-masks": dict(masks=M.astype(np.float32)),
        "boxes": dict(masks=None, boxes=boxes.astype(np.float32), roi_size=(H, W)),
        "projected": dict(masks=None, roi=egal.project_roi(M.astype(np.uint8), cam_size=(2, 2))),
    }


@pytest.mark.parametrize("roi", sorted(_roi_forms()))
@pytest.mark.parametrize("source", ["gradients", "weights"])
def test_fused_scorer_gives_the_written_numbers(roi, source):
    overrides = dict(_roi_forms()[roi])
    if source == "weights":
        overrides.update(gradients=None, weights=_doc("w")[None].astype(np.float32))
    result = _fused(**overrides)
    _assert_fused_matches(result, EXPECTED["D"], EXPECTED["S"])
    np.testing.assert_allclose(result.cam[0], EXPECTED["cam"], rtol=0, atol=1e-6)


def test_project_roi_gives_the_written_projection():
    _, _, _, M, boxes, _ = _inputs()
    for roi in (egal.project_roi(M.astype(np.uint8), cam_size=(2, 2)),
                egal.project_roi(boxes=boxes.astype(np.float32), roi_size=M.shape[1:], cam_size=(2, 2))):
        np.testing.assert_allclose(np.asarray(roi.weights)[0], EXPECTED["P"], rtol=0, atol=1e-6)
        assert float(np.asarray(roi.area)[0]) == EXPECTED["SM"]


def test_fused_scorer_gives_the_written_variants():
    _, G, _, M, _, _ = _inputs()
    no_roi = _fused(masks=np.zeros_like(M, dtype=np.uint8))
    _assert_fused_matches(no_roi, EXPECTED["D_no_roi"], EXPECTED["S_no_roi"])
    assert np.isnan(no_roi.misalignment[0])
    flat = _fused(gradients=np.zeros_like(G, dtype=np.float32))
    # 1e-7 tells the Dice eps 1e-6 (D = 0.99999975) from 1e-7 (D = 0.999999975).
    _assert_fused_matches(flat, EXPECTED["D_flat"], EXPECTED["S_flat"], atol=1e-7)
    np.testing.assert_array_equal(flat.cam[0], np.zeros((2, 2), dtype=np.float32))
    _assert_fused_matches(_fused(alpha=0.0), EXPECTED["D"], EXPECTED["S_alpha0"])
    _assert_fused_matches(_fused(alpha=1.0), EXPECTED["D"], EXPECTED["S_alpha1"])


def test_reference_scorer_gives_the_written_numbers():
    pytest.importorskip("torch")
    result = _fused(backend="reference")
    _assert_fused_matches(result, EXPECTED["D"], EXPECTED["S"])
    np.testing.assert_allclose(result.cam[0], EXPECTED["cam"], rtol=0, atol=1e-6)


# The constants and rules that the page states and that the shared SCORING.md states too.
SHARED_STATEMENTS = [
    "max cam_b - min cam_b + 1e-7",
    "eps = 1e-6",
    "align_corners=False",
    "(y + 0.5) * h / H - 0.5, clamped below at 0",
    "y1 = min(y0 + 1, h - 1)",
    "D_b is reported as NaN and S_b = H_norm_b",
    "pixel centre",
    "ties: lowest index",
    "ties broken by sample id",
    "ascending",
    "NaN scores (bad input) are never",
    "C >= 2",
]


def _flat(text):
    return " ".join(text.replace("*", "").split())


@pytest.mark.parametrize("statement", SHARED_STATEMENTS)
def test_the_page_states_the_definition(statement):
    assert _flat(statement) in _flat(DOC.read_text())


@pytest.mark.skipif(not SHARED.exists(), reason=f"the project's shared page is not at {SHARED}")
@pytest.mark.parametrize("statement", SHARED_STATEMENTS)
def test_the_shared_page_states_the_same(statement):
    assert _flat(statement) in _flat(SHARED.read_text())


def test_the_implementations_use_the_stated_constants():
    from egal import reference

    assert scoring_f64.NORM_EPS == reference.NORM_EPS == 1e-7
    assert scoring_f64.DICE_EPS == reference.DICE_EPS == 1e-6
    header = (ROOT / "cpp" / "src" / "score_math.h").read_text()
    assert "kNormEps = 1e-7f;" in header and "kDiceEps = 1e-6;" in header
