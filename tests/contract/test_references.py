"""Everything the README, docs/API.md and the docstrings cite resolves: every repository path
they name exists (files generated at build time from the registry exist after the build), and
every docstring points at the API reference the package carries."""

from __future__ import annotations

import re
from pathlib import Path

import fastloss
import fastloss.numpy_backend
from fastloss import _registry

REPO = Path(__file__).resolve().parents[2]
PATH = re.compile(r"(?<![\w/.-])((?:docs|fastloss|tests|bench|examples|\.ci)/[\w./-]*\w)")


def cited_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in PATH.findall(text) if "*" not in m and "<" not in m}


def test_readme_and_api_reference_cite_existing_paths():
    for doc in ("README.md", "docs/API.md", "bench/README.md"):
        missing = sorted(p for p in cited_paths((REPO / doc).read_text()) if not (REPO / p).exists())
        assert not missing, f"{doc} cites paths that do not exist: {missing}"


def test_docstrings_cite_existing_paths_and_the_api_reference():
    docs = [fastloss.__doc__, fastloss.numpy_backend.__doc__]
    for spec in _registry.LOSSES:
        for name in spec.functions:
            doc = getattr(fastloss, name).__doc__
            assert "docs/API.md" in doc and "python -m fastloss api" in doc, name
            docs.append(doc)
    missing = sorted(p for d in docs for p in cited_paths(d) if not (REPO / p).exists())
    assert not missing, f"docstrings cite paths that do not exist: {missing}"
    installed = Path(fastloss.__file__).parent / "API.md"
    assert installed.is_file(), "the package carries no API.md (the build copies docs/API.md)"
