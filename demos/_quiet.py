"""Start the Keras backend without TensorFlow's native start-up noise.

TensorFlow 2.21 writes a handful of C++ log lines while it loads and finds
its devices ("All log messages before absl::InitializeLog() ...", oneDNN and
CPU-feature notices, "Could not find cuda drivers" and a failed `cuInit` on a
machine without a GPU, and oneDNN's note on boolean tensors the first time
a graph moves one), before Python can set any log level:
`TF_CPP_MIN_LOG_LEVEL` does not reach them, and they look like failures. A
demo's output should be its results, so every demo starts the backend with
`quiet_backend_start()`: file descriptor 2 goes to a temporary file while
Keras is imported and runs its first op, then every captured line that is
not one of those known notices is written back to stderr (a real error
message is never hidden). Call it before anything imports Keras.
"""

import os
import re
import sys
import tempfile

_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|port\.cc.*oneDNN|"
    r"cuda_platform\.cc.*cuInit|cuda_diagnostics|cpu_feature_guard\.cc|"
    r"To enable the following instructions: |rebuild TensorFlow with the appropriate compiler flags|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"util\.cc.*oneDNN supports DT_BOOL"
)


def _first_bool_graph():
    """oneDNN logs "supports DT_BOOL only on platforms with AVX-512" once per
    process, the first time a graph moves a boolean tensor (a masked LSTM
    does): trigger it here, inside the filtered window."""
    import tensorflow as tf

    @tf.function(autograph=False)
    def transpose(m):
        return tf.transpose(m)

    transpose(tf.zeros((2, 2), tf.bool))


def quiet_backend_start():
    """Import Keras and run one op with the known start-up notices filtered
    out of stderr; returns the `keras` module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        import keras

        return keras
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            import keras

            keras.ops.convert_to_numpy(keras.ops.zeros(()))  # device start-up (cuInit)
            if keras.backend.backend() == "tensorflow":
                _first_bool_graph()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode("utf-8", "replace").splitlines(True)
                if not _NOISE.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return keras
