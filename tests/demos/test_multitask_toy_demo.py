import keras
import pytest

from tests.multitask import toy


@pytest.mark.slow
def test_multitask_toy_demo_smoke(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("demos run end to end on the default backend only")
    from demos import multitask_toy

    out = tmp_path / "toy.png"
    rows = multitask_toy.main(["--smoke", "--methods", "mgda", "--output", str(out)])
    assert out.exists()
    assert len(rows) == len(toy.CAGRAD_STARTS)
    for name, _, _, dist in rows:
        if name == "mgda":
            assert dist < 0.01
