"""Hypothesis on code validation: any JSON value as a code is either a valid model input or a 422.

In process (``code_array``, the one place codes are checked) with many examples, then through a
running ``ae-serve`` with fewer, raw JSON text included (NaN, Infinity, huge exponents, deep nests).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.intake import InvalidInput, code_array
from service.registry import Model, load_model
from tests.hardening.conftest import LiveServer

# Each test here bounds its own wait: a hang fails it within 120 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(120)

FLOAT32_MAX = float(np.finfo(np.float32).max)

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


@pytest.fixture(scope="module")
def model(models_dir: Path) -> Model:
    return load_model(models_dir / "mnist-denoise", "cpu")


def _codes_of_the_right_size(size: int, shape: tuple[int, ...]) -> st.SearchStrategy[Any]:
    # Mostly values a decoder takes (within mnist-denoise's code limits, about ±20), some far out.
    values = st.one_of(st.floats(-25, 25), st.floats(-25, 25), st.floats(allow_nan=True, allow_infinity=True))
    flat = st.lists(values, min_size=size, max_size=size)
    return st.one_of(flat, flat.map(lambda v: np.asarray(v, dtype=object).reshape(shape).tolist()))


def _check(code: Any, model: Model) -> None:
    try:
        array = code_array(code, model)
    except InvalidInput as exc:  # 422 (service/errors.py)
        assert str(exc)
        return
    assert array.dtype == np.float32 and array.shape == model.code_shape
    assert np.isfinite(array).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=json_values)
def test_any_json_value_is_a_valid_code_or_a_422(code: Any, model: Model) -> None:
    _check(code if isinstance(code, list) else [code], model)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_right_sized_codes_pass_exactly_when_finite_and_within_the_code_limits(
    data: st.DataObject, model: Model
) -> None:
    assert model.code_shape is not None and model.code_limits is not None
    low, high = model.code_limits
    code = data.draw(_codes_of_the_right_size(model.code_size, model.code_shape))
    values = np.asarray(code, dtype=np.float64).ravel()
    finite = bool(np.isfinite(values).all() and np.abs(values).max() <= FLOAT32_MAX)
    if finite and low <= values.min() and values.max() <= high:
        np.testing.assert_array_equal(code_array(code, model).ravel(), values.astype(np.float32))
    else:
        with pytest.raises(InvalidInput):
            code_array(code, model)


def _raw_number(value: float, exponent: str) -> str:
    """JSON text for ``value``: NaN/Infinity tokens (non-standard, and clients do send them)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.6f}{exponent}" if exponent else json.dumps(value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.sampled_from([256, 256, 256, 255, 257, 1, 0]),  # mostly the right length, to reach inference
    data=st.data(),
    nest=st.integers(0, 2),
    exponent=st.sampled_from(["", "", "e38", "e39", "e308", "e400", "e-400"]),
)
def test_decode_over_http_is_200_or_422(
    server: LiveServer, size: int, data: st.DataObject, nest: int, exponent: str
) -> None:
    finite = st.floats(-10, 10)
    odd = st.floats(allow_nan=True, allow_infinity=True)
    values = data.draw(st.lists(st.one_of(finite, finite, finite, odd), min_size=size, max_size=size))
    numbers = ", ".join(_raw_number(v, exponent) for v in values)
    body = '{"code": ' + "[" * nest + f"[{numbers}]" + "]" * nest + "}"
    response = httpx.post(
        f"{server.url}/decode",
        content=body,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        pixels = np.asarray(response.json()["pixels"])
        assert pixels.shape == (28, 28) and np.isfinite(pixels).all()
    else:
        assert response.json()["detail"]
