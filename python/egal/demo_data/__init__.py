"""The built-in demonstration data: a synthetic lesion pool with a "right for the wrong reason" trap.

  make_synthetic_pool(out_dir, n, ...) -> path    a pool in egal's pool format (egal.pool), for
                                                  `egal demo`, the tests, benchmarks and soak runs
  scenes.render_scene(rng, size, lesion, marker)  one synthetic scan and its lesion mask

Generating data is not part of the pool format: egal.pool reads pools, this package writes one.
"""
from .pool import make_synthetic_pool

__all__ = ["make_synthetic_pool"]
