from shared_data import check_reference_data


def pytest_sessionstart(session) -> None:  # noqa: ARG001 - pytest hook signature
    check_reference_data()
