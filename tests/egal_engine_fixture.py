"""A fixture that makes egal.score_batch available to tests of code built on it.

Code under test calls `egal.score_batch` (the compiled engine). In a build
without it, the tests run against the pure-PyTorch reference, which computes
the same function (SCORING.md); once the engine exists, they exercise it.
"""
import pytest


@pytest.fixture
def score_engine(monkeypatch):
    import egal

    engine = getattr(egal, "score_batch", None)
    if engine is None:
        import egal.reference

        engine = egal.reference.score_batch
        monkeypatch.setattr(egal, "score_batch", engine, raising=False)
    return engine
