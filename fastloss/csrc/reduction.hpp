// What a reduction does with the float64 sum of the weighted losses, for every compiled path
// (the Cython fast path and the C level; the Python general path has its twin in
// fastloss/_api.py, "reductions", and tests/numerics checks the two agree on every edge):
//   "mean": total / divisor, with IEEE semantics (an empty mean, 0 / 0, is NaN), and the
//           gradient scaled by 1 / divisor (inf for a zero divisor);
//   "sum" and "none": the total, gradient unscaled.
// What "mean" divides by is the registry's (Facts::divisor, generated).
#pragma once

#include <cmath>
#include <limits>

namespace fl {

enum Reduction { MEAN = 0, SUM = 1, NONE = 2 };  // FASTLOSS_MEAN, FASTLOSS_SUM

inline double mean_scale(int reduction, double divisor) {
    if (reduction != MEAN) return 1.0;
    return divisor != 0 ? 1.0 / divisor : std::numeric_limits<double>::infinity();
}

inline double reduced(double total, double divisor, int reduction) {
    if (reduction != MEAN) return total;
    if (divisor != 0) return total / divisor;
    return (total == 0 || total != total) ? std::numeric_limits<double>::quiet_NaN()
                                          : std::copysign(std::numeric_limits<double>::infinity(), total);
}

}  // namespace fl
