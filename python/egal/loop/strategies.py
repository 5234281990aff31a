"""Selection strategies. A strategy sees the model, the unlabelled rows' images, ROIs and ids,
and nothing else: it has no way to read the hidden labels."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from .._checks import check_alpha
from ..combine import DEFAULT_ALPHA
from ..errors import EgalError
from ..selection import DIVERSITY_METHODS, select_batch, select_top_k
from .scoring import INFERENCE_BATCH, score_in_batches

KINDS = ("random", "entropy", "misalignment", "egal")


@dataclass(frozen=True)
class Strategy:
    kind: str  # one of KINDS
    alpha: float | None = None  # weight of the entropy term (None for random)
    combine: str = "raw"  # "raw": docs/scoring.md's formula; "rank": each term rank-normalised over the pool first
    diversity: str = "none"  # egal.selection: "kcenter" / "cluster" choose a diverse batch among the top rows
    per_group: int | None = None  # at most this many rows per group (the dataset's group column) a round

    @property
    def name(self) -> str:
        if self.kind == "egal":
            name = f"egal_a{self.alpha:g}" if self.combine == "raw" else f"egal_{self.combine}_a{self.alpha:g}"
        else:
            name = self.kind
        if self.diversity != "none":
            name += f"+{self.diversity}"
        if self.per_group is not None:
            name += "+group" if self.per_group == 1 else f"+group{self.per_group}"
        return name

    def select(self, model, images, masks, ids, k: int, rng: np.random.Generator, *, batch_size: int = INFERENCE_BATCH,
               features=None, scored: dict | None = None, groups=None) -> np.ndarray:
        """Positions (into the given unlabelled arrays) of the k rows to annotate next.

        features: the frozen prefix's cached outputs for these rows (egal.train.feature_cache), if any.
        groups: the rows' groups (patients), needed by a strategy with a group cap.
        scored: pool scores already computed for this model and these rows, keyed by alpha (filled in
        here): strategies that share a model and an alpha (egal and egal-rank in round 0) score once."""
        ids = np.asarray(ids)
        k = min(k, len(ids))
        if self.kind == "random":
            return np.sort(rng.choice(len(ids), size=k, replace=False))
        scores = None if scored is None else scored.get(self.alpha)
        if scores is None:
            scores = score_in_batches(model, images, masks, alpha=self.alpha, batch_size=batch_size, features=features)
            if scored is not None:
                scored[self.alpha] = scores
        score = scores.score
        if self.combine != "raw":
            from ..combine import combine_scores

            # valid: a row whose Grad-CAM inputs were not finite must not pass for a row without ROI
            score = combine_scores(scores.entropy_norm, scores.misalignment, self.alpha, self.combine,
                                   valid=np.isfinite(scores.score))
        if self.diversity == "none" and self.per_group is None:
            chosen = select_top_k(score, ids, k)  # best first, ties by id
        else:
            chosen = self._select_batch(model, images, ids, score, k, batch_size, features, groups)
        position = {v: i for i, v in enumerate(ids.tolist())}
        return np.array([position[v] for v in chosen.tolist()], dtype=np.int64)

    def _select_batch(self, model, images, ids, score, k, batch_size, features, groups) -> np.ndarray:
        """egal.selection.select_batch with this strategy's diversity and group cap."""
        if self.per_group is not None and groups is None:
            raise EgalError(f"strategy {self.name!r} caps the rows per group, but the data has no groups: set "
                            "[data] group_column (--group-column) to a patient id column")
        embeddings = None
        if self.diversity != "none":
            from .embeddings import embed_in_batches

            embeddings = embed_in_batches(model, images, batch_size=batch_size, features=features)
        return select_batch(score, ids, k, diversity=self.diversity, embeddings=embeddings,
                            groups=groups if self.per_group is not None else None, per_group=self.per_group).ids


def parse_strategies(names: Iterable[str], *, alpha: float = DEFAULT_ALPHA,
                     alpha_grid: Iterable[float] = ()) -> list[Strategy]:
    """'random', 'entropy' (alpha 1), 'misalignment' (alpha 0), 'egal' (the given alpha), 'egal:0.3'
    (an explicit alpha), 'egal-rank' / 'egal-rank:0.3' (both terms rank-normalised over the scored
    pool before mixing, egal.combine), and 'egal' at every alpha of alpha_grid. Duplicates are dropped.
    Any of them but random may end in selection modifiers (egal.selection.select_batch): '+kcenter' or
    '+cluster' (a diverse batch among the top 10 x budget rows, in the model's embedding space), '+group'
    or '+groupN' (at most 1, or N, rows per group of the data's group column in a round's batch):
    'egal+kcenter', 'egal-rank:0.3+cluster', 'egal+group2'."""
    _check_alpha(alpha, "alpha")
    out: list[Strategy] = []
    for raw in names:
        name, modifiers = _split_modifiers(raw.strip())
        if not name:
            continue
        m = re.fullmatch(r"egal(-rank)?[:@=]([0-9.eE+-]+)", name)
        if name == "random":
            s = Strategy("random")
        elif name == "entropy":
            s = Strategy("entropy", 1.0)
        elif name == "misalignment":
            s = Strategy("misalignment", 0.0)
        elif name in ("egal", "egal-rank"):
            s = Strategy("egal", float(alpha), "rank" if name == "egal-rank" else "raw")
        elif m:
            try:
                value = float(m.group(2))
            except ValueError:
                raise EgalError(f"strategy {name!r}: {m.group(2)!r} is not a number") from None
            s = Strategy("egal", _check_alpha(value, f"strategy {name!r}: alpha"), "rank" if m.group(1) else "raw")
        else:
            raise EgalError(f"unknown strategy {name!r}; choose from random, entropy, misalignment, egal, egal:ALPHA, "
                            "egal-rank, egal-rank:ALPHA")
        if modifiers:
            s = _with_modifiers(s, modifiers, raw.strip())
        if s not in out:
            out.append(s)
    for a in alpha_grid:
        s = Strategy("egal", _check_alpha(float(a), "alpha grid value"))
        if s not in out:
            out.append(s)
    if not out:
        raise EgalError("no strategies given")
    seen: dict[tuple, Strategy] = {}
    for s in out:  # two names for one selection would make two runs, and a paired row of a strategy with itself
        key = _selects_as(s)
        if key is not None and key in seen:
            first = seen[key]
            shown = (f"{first.name} (alpha {first.alpha!r}) and {s.name} (alpha {s.alpha!r}), equal in the float32 "
                     "the scorer takes," if first.name == s.name else f"{first.name} and {s.name}")
            raise EgalError(f"strategies {shown} select the same rows ({key[0]} alone): keep one")
        if key is not None:
            seen[key] = s
    names = [s.name for s in out]
    same = {n for n in names if names.count(n) > 1}
    if same:  # one name, one run file: the second would overwrite the first
        detail = ", ".join(f"{s.name} (alpha {s.alpha!r})" for s in out if s.name in same)
        raise EgalError(f"strategies that differ beyond the alpha their name shows would share a run file: {detail}; "
                        "give alphas that differ in their first 6 significant digits")
    return out


def _selects_as(s: Strategy) -> tuple | None:
    """What `s` selects by when that is entropy or misalignment alone, with its modifiers; None otherwise. egal at
    alpha 1 is entropy alone, raw or rank-mixed (ranks of entropy order rows as entropy does); at alpha 0 only the
    raw mix is misalignment alone (the rank mix treats rows without an ROI otherwise)."""
    alone = None
    alpha = None if s.alpha is None else float(np.float32(s.alpha))  # as the scorer takes it (0.99999999999 is 1)
    if s.kind in ("entropy", "misalignment"):
        alone = s.kind
    elif s.kind == "egal" and alpha == 1.0:
        alone = "entropy"
    elif s.kind == "egal" and alpha == 0.0 and s.combine == "raw":
        alone = "misalignment"
    return None if alone is None else (alone, s.diversity, s.per_group)


def _check_alpha(value, what) -> float:
    return check_alpha(value, what)


def _split_modifiers(name: str):
    """('egal-rank:0.3', [('cluster', ''), ('group', '2')]) for 'egal-rank:0.3+cluster+group2'."""
    m = re.fullmatch(r"(.*?)((?:\+[a-z]+\d*)*)", name)
    return m.group(1), re.findall(r"\+([a-z]+)(\d*)", m.group(2))


def _with_modifiers(strategy: Strategy, modifiers, name: str) -> Strategy:
    if strategy.kind == "random":
        raise EgalError(f"strategy {name!r}: random selection takes no modifiers (they act on a score)")
    diversity, per_group = "none", None
    for word, number in modifiers:
        if word in DIVERSITY_METHODS[1:] and not number and diversity == "none":
            diversity = word
        elif word == "group" and per_group is None and (not number or int(number) >= 1):
            per_group = int(number) if number else 1
        else:
            raise EgalError(f"strategy {name!r}: unknown or repeated modifier '+{word}{number}'; use at most one of "
                            f"{', '.join('+' + d for d in DIVERSITY_METHODS[1:])} and at most one +group or +groupN "
                            "(N >= 1)")
    return replace(strategy, diversity=diversity, per_group=per_group)
