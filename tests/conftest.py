"""Shared pytest set-up: the backend in the header, and isolation of
global Keras state (dtype policy) between tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    from keras_tricks import _backend

    return f"keras {keras.__version__}, backend {keras.backend.backend()}, devices {_backend.list_devices()}"


@pytest.fixture(autouse=True)
def _restore_global_keras_state():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)
