import sys
from pathlib import Path

# bench/ shares the scorer tests' input generators.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
