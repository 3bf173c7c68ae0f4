"""Where the polynomial coefficients of log_cosh_loss (fastloss/csrc/losses.hpp:
log_cosh_poly, tanh_poly) come from.

    python docs/fit_log_cosh.py        (needs mpmath: pip install mpmath)

Both are even functions with poles of tanh at +-i pi/2, fitted in z = a^2 by Chebyshev
interpolation in 200-bit arithmetic (mpmath.chebyfit: close to the minimax polynomial):

    log cosh(a) = z/2 + z^2 P(z),   P(z) = (log cosh(a) - z/2) / z^2,  a < 0.8 (z <= 0.64)
    tanh(a)     = a + a z Q(z),     Q(z) = (tanh(a) - a) / (a z),      a < 0.55 (z <= 0.3025)

(above those, log cosh(a) = a - log 2 + log1p(exp(-2a)) and tanh(a) = 1 - 2u / (1 + u),
u = exp(-2a), have no cancellation). The script prints the coefficients, lowest degree first, as
losses.hpp has them (9 resp. 17 significant digits), and the largest error of the rounded
polynomial relative to the final result (log cosh, tanh) on a fine grid, in units of 2^-p.
"""

import mpmath as mp
import numpy as np

mp.mp.prec = 200


def log_cosh_p(z):
    a = mp.sqrt(z)
    return (mp.log(mp.cosh(a)) - z / 2) / z**2 if z > mp.mpf("1e-40") else mp.mpf(-1) / 12 + z / 45


def tanh_q(z):
    a = mp.sqrt(z)
    return (mp.tanh(a) - a) / (a * z) if z > mp.mpf("1e-40") else mp.mpf(-1) / 3 + 2 * z / 15


def log_cosh_of(z, p):
    return z / 2 + z**2 * p


def tanh_of(z, q):
    return mp.sqrt(z) * (1 + z * q)


CASES = [  # name, function, z_max, terms, dtype, digits, final result from (z, poly value)
    ("log_cosh_poly<double>", log_cosh_p, mp.mpf("0.64"), 12, np.float64, 17, log_cosh_of),
    ("log_cosh_poly<float>", log_cosh_p, mp.mpf("0.64"), 6, np.float32, 9, log_cosh_of),
    ("tanh_poly<double>", tanh_q, mp.mpf("0.3025"), 11, np.float64, 17, tanh_of),
    ("tanh_poly<float>", tanh_q, mp.mpf("0.3025"), 5, np.float32, 9, tanh_of),
]


def main():
    for name, function, z_max, terms, dtype, digits, final in CASES:
        highest_first = mp.chebyfit(function, [0, z_max], terms)
        coefficients = [mp.nstr(c, digits, min_fixed=-1, max_fixed=-1) for c in highest_first[::-1]]
        rounded = [mp.mpf(float(dtype(float(c)))) for c in highest_first[::-1]]
        worst = mp.mpf(0)
        for z in mp.linspace(z_max / 4000, z_max, 4000):
            approx = mp.fsum(c * z**k for k, c in enumerate(rounded))
            exact = final(z, function(z))
            worst = max(worst, abs(final(z, approx) - exact) / abs(exact))
        bits = np.finfo(dtype).nmant + 1
        print(f"{name}: {', '.join(coefficients)}")
        print(f"    relative error of the result: {mp.nstr(worst, 3)} = {mp.nstr(worst * 2**bits, 3)} * 2^-{bits}")


if __name__ == "__main__":
    main()
