import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.spec import TensorSpec, parse_input_spec


def test_parse_static_and_symbolic_dims():
    assert parse_input_spec("image:1x3x32x32:float32") == TensorSpec("image", (1, 3, 32, 32), "float32")
    assert parse_input_spec("image:batch x3x32x32") == TensorSpec("image", ("batch", 3, 32, 32), "float32")
    assert parse_input_spec("ids:batch,max_len:int64") == TensorSpec("ids", ("batch", "max_len"), "int64")


@pytest.mark.parametrize("text, message", [
    ("image", "expected name:DIMS"),
    ("image:1x3:complex64", "unknown dtype 'complex64'"),
    ("image:1x-3", "dim '-3' is neither a number nor a name"),
])
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(UserError, match=message):
        parse_input_spec(text)


def test_mismatch_explains_dims_and_dtype():
    spec = TensorSpec("image", ("batch", 1, 8, 8), "float32")
    assert spec.mismatch((4, 1, 8, 8), np.dtype("float32")) is None
    assert "dim 2 is 7, expected 8" in spec.mismatch((4, 1, 7, 8), np.dtype("float32"))
    assert "dtype float64 != float32" in spec.mismatch((4, 1, 8, 8), np.dtype("float64"))
    assert "rank 3 != 4" in spec.mismatch((1, 8, 8), np.dtype("float32"))
