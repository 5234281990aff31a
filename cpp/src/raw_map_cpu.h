// Steps 2-3 of docs/scoring.md on the CPU: the channel weights and the raw
// Grad-CAM map of one sample. Internal to the backends.
#pragma once
#include <cstdint>

#include "egal/score.h"

namespace egal::cpu {

// Writes sum_k w_k A_k (before the ReLU) into cam [h * w], with w_k the mean of
// gradient plane k or the given weight; `plane` is scratch for h * w floats.
// Returns false when a channel weight is not finite. Runs in the widest
// instruction set of cpu_isa.h, whatever the planes' dtype and strides.
bool raw_map(const ScoreInputs& in, int64_t b, float* cam, float* plane);

}  // namespace egal::cpu
