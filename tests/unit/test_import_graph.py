"""The shape of the package: the endpoint never reaches the trainer; the input contract stays light."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT
from tools import import_graph


def test_the_endpoint_imports_nothing_from_training_even_lazily():
    modules = import_graph.project_modules()
    graph = {name: import_graph.imports_of(path, set(modules)) for name, path in modules.items()}
    for name in modules:
        if name.startswith("include.continuous_training.serving"):
            assert "include.continuous_training.training" not in import_graph.closure(name, graph), name
    assert import_graph.main(["--check"]) == 0


def test_importing_the_endpoint_does_not_load_the_trainer():
    """At run time too: importing the endpoint and the registry loader leaves training out of sys.modules."""
    probe = (
        "import json, sys; import include.continuous_training.serving.app, "
        "include.continuous_training.serving.model_store, include.continuous_training.registry; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('include.'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "include.continuous_training.serving.app" in loaded
    assert "include.continuous_training.training" not in loaded


def test_the_input_contract_is_light():
    """DAG files import features at parse time: numpy, pandas and xgboost must not come with it."""
    probe = (
        "import json, sys; import include.continuous_training.features; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pandas', 'xgboost'})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
