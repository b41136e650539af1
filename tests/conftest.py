import pytest


@pytest.fixture(scope="session")
def tiny():
    from llamalab.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def default_model():
    """The real default model (fetched into the cache once; `make test` fetches it first)."""
    from llamalab.models import load_model

    return load_model("default", dtype="float32")
