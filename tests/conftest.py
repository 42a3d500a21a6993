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


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """A tiny synthetic data set (train 3 / val 2 / test 2 videos of 32 px, 4-5 frames) for
    the training command tests; one per test module."""
    from avis.data.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(size=32, min_frames=4, max_frames=5, num_classes=6)
    generate_dataset(
        root, seed=3, counts={"train": 3, "val": 2, "test": 2}, config=config, workers=1
    )
    return root

