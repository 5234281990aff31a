"""The active-learning experiment: seed set, rounds of train / score / select / reveal, metrics, report.

    from egal.loop import load_config, run_simulation
    run_simulation(load_config("configs/figshare_cpu.toml"), "results/figshare_cpu")
"""
from .config import DataConfig, ExperimentConfig, LoopConfig, load_config
from .data import Dataset, load_dataset
from .metrics import evaluate, macro_ovr_auc
from .report import load_runs, summarise, write_report
from .rounds import HiddenLabels, draw_seed_set, run_strategy
from .scoring import ModelScores, score_in_batches
from .simulation import run_simulation
from .splits import balanced_seed_set, split_test
from .strategies import KINDS, Strategy, parse_strategies

__all__ = ["KINDS", "DataConfig", "Dataset", "ExperimentConfig", "HiddenLabels", "LoopConfig", "ModelScores",
           "Strategy", "balanced_seed_set", "draw_seed_set", "evaluate", "load_config", "load_dataset", "load_runs",
           "macro_ovr_auc", "parse_strategies", "run_simulation", "run_strategy", "score_in_batches",
           "split_test", "summarise", "write_report"]
