import pytest

from shared_data import check_reference_data


def pytest_sessionstart(session) -> None:  # noqa: ARG001 - pytest hook signature
    check_reference_data()


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model would be loaded (argument checks must come first)."""
    from avis.inference.predictor import VideoPredictor

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(VideoPredictor, "from_checkpoint", refuse)

