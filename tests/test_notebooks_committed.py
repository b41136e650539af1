"""Committed notebooks carry no outputs and follow the notebook anatomy of design.md section 4."""

import json

import pytest

from llamalab import paths

NOTEBOOKS = sorted(paths.notebooks_dir().glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("01_")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_outputs(nb_path):
    nb = json.loads(nb_path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{nb_path.name}: cells {dirty} carry outputs; run `make strip`"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_anatomy(nb_path):
    cells = json.loads(nb_path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "colab-badge" in "".join(cells[0]["source"])
    tags = [c.get("metadata", {}).get("tags", []) for c in cells]
    assert "skip-execution" in tags[1], "cell 2 is the Colab install cell, tagged skip-execution"
    assert "google.colab" in "".join(cells[1]["source"])
    params = [c for c, t in zip(cells, tags, strict=True) if "parameters" in t]
    assert len(params) == 1 and "PROFILE" in "".join(params[0]["source"])
    assert "assert" in "".join(cells[-1]["source"]), "the last cell holds checks that can fail"
