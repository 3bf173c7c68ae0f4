"""The benchmark behind ``python -m fastloss bench`` (and the facts ``python -m fastloss info``
shows): fastloss against the code it replaces, on this machine.

* ``core``     the run: configuration, timing, bandwidth, memory, the report, JSON, plot,
               and the machine / build facts (``info_text``);
* ``cases``    what is run: one entry per registry loss in each table (inputs, the NumPy,
               PyTorch, scikit-learn and JAX code of each loss);
* ``runners``  the competitors as ready-to-call runners, and the agreement check.

Imports point one way: the bench uses fastloss's public modules and ``fastloss._registry``;
nothing in the core package imports the bench. ``fastloss/__main__.py`` is the command line.
"""
