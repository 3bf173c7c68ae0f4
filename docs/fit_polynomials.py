"""Where the polynomial coefficients of fastloss/csrc/vecmath.hpp come from.

    python docs/fit_polynomials.py        (needs mpmath: pip install mpmath)

For each polynomial it fits the function on its interval by Chebyshev interpolation in 50-digit
arithmetic (mpmath.chebyfit: close to the minimax polynomial), rounds the coefficients to the
working precision and prints them, lowest degree first, with the largest absolute error of the
rounded polynomial on a fine grid. The number of terms is the fewest that keep the error of
exp and log below 0.1 ulp (see the comments at exp_poly and log_series); for expm1mx_poly's
h (e^z - 1 - z = z^2 / 2 + z^3 h(z)), about the rounding of its coefficients.
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 50

# exp(r) = 1 + r + r^2 q(r) for |r| <= ln2 / 2 (a hair wider: n = round(x / ln2) is rounded)
EXP_HALF_WIDTH = mp.log(2) / 2 * mp.mpf("1.0001")
# log f = 2 atanh(s) = 2s + 2s z p(z), z = s^2, s = (f - 1) / (f + 1), f in [sqrt(2)/2, sqrt(2))
LOG_Z_MAX = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2 * mp.mpf("1.0001")


def exp_q(r):
    return (mp.exp(r) - 1 - r) / r**2 if r != 0 else mp.mpf(1) / 2


def log_p(z):
    return (mp.atanh(mp.sqrt(z)) / mp.sqrt(z) - 1) / z if z != 0 else mp.mpf(1) / 3


# e^z - 1 - z = z^2 / 2 + z^3 h(z) for z in [-1, 2] (the deviances' stable form; a hair wider)
EXPM1MX_INTERVAL = (mp.mpf(-1) * mp.mpf("1.0001"), mp.mpf(2) * mp.mpf("1.0001"))


def expm1mx_h(z):
    return (mp.expm1(z) - z - z * z / 2) / z**3 if abs(z) > mp.mpf("1e-12") else 1 / mp.mpf(6) + z / 24


CASES = [  # name, function, interval, terms, working precision
    ("exp_poly<double>: q", exp_q, (-EXP_HALF_WIDTH, EXP_HALF_WIDTH), 10, np.float64),
    ("exp_poly<float>: q", exp_q, (-EXP_HALF_WIDTH, EXP_HALF_WIDTH), 5, np.float32),
    ("log_series<double>: p", log_p, (mp.mpf(0), LOG_Z_MAX), 7, np.float64),
    ("log_series<float>: p", log_p, (mp.mpf(0), LOG_Z_MAX), 4, np.float32),
    ("expm1mx_poly<double>: h", expm1mx_h, EXPM1MX_INTERVAL, 15, np.float64),
    ("expm1mx_poly<float>: h", expm1mx_h, EXPM1MX_INTERVAL, 8, np.float32),
]


def fit(function, interval, terms, dtype):
    highest_first = mp.chebyfit(function, list(interval), terms)
    # Rounded once to double, as the C++ literals are; float32 literals round that again.
    coefficients = [dtype(float(c)) for c in highest_first[::-1]]
    lo, hi = interval
    grid = [lo + (hi - lo) * k / 4000 for k in range(4001)]
    error = max(abs(mp.polyval([mp.mpf(float(c)) for c in coefficients[::-1]], t) - function(t)) for t in grid)
    return coefficients, error


def main():
    for name, function, interval, terms, dtype in CASES:
        coefficients, error = fit(function, interval, terms, dtype)
        print(f"{name}, {terms} terms, max |error| 2^{float(mp.log(error, 2)):.1f}")
        print("    " + ", ".join(repr(float(c)) for c in coefficients))


if __name__ == "__main__":
    main()
