"""cross_entropy with class probabilities checks every argument it takes: ignore_index is
not used there (as PyTorch), but a value that is not an integer is still refused, as it is
with class indices (it was accepted silently)."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
import fastloss.numpy_backend


@pytest.mark.parametrize("api", [fastloss, fastloss.numpy_backend], ids=["default", "numpy"])
@pytest.mark.parametrize("bad, error", [("x", TypeError), (1.5, TypeError), (True, TypeError),
                                        (2**63, ValueError)])
def test_ignore_index_is_checked_with_probability_targets(api, bad, error):
    x = np.zeros((3, 4))
    probs = np.full((3, 4), 0.25)
    with pytest.raises(error, match="ignore_index"):
        api.cross_entropy(x, probs, ignore_index=bad)
    with pytest.raises(error, match="ignore_index"):
        api.cross_entropy_grad(x, probs, ignore_index=bad)
    # a valid one is accepted and changes nothing
    assert api.cross_entropy(x, probs, ignore_index=3) == api.cross_entropy(x, probs)
