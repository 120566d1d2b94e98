"""TF Serving REST requests, converted the way TF Serving converts them (``:predict`` API).

A request body is a JSON object with exactly one of

* ``"instances"`` (row form): a list with one JSON object per example, ``{input name: value}``, every
  object naming every input of the signature; values are stacked along a new batch dimension;
* ``"inputs"`` (column form): ``{input name: [value per example]}`` (or the bare list for a
  signature with a single input),

plus an optional ``"signature_name"``. Each value is converted to the signature's dtype the way TF
Serving's JSON parser does: a ``DT_STRING`` input takes JSON strings (or ``{"b64": "..."}`` for bytes),
never numbers; a float input takes JSON numbers (``NaN`` / ``Infinity`` literals included); an
integer input takes JSON integers only (not ``3.0``); booleans are refused everywhere but in ``DT_BOOL``.

The response follows TF Serving too: ``{"predictions": [...]}`` per row for the row form,
``{"outputs": ...}`` for the column form; a signature with a single output drops the output name.
"""
from __future__ import annotations

import base64
import json

import numpy as np
import tensorflow as tf

from tfmec.api_export import tfmec_export


@tfmec_export("tfmec.export.RequestError")
class RequestError(ValueError):
    """A request TF Serving would reject (HTTP 400); the message names the offending part."""


def signature_input_specs(fn) -> dict:
    """``{name: tf.TensorSpec}`` of a signature (a loaded SavedModel signature / concrete function)."""
    return dict(fn.structured_input_signature[1])


def _scalar(value, dtype: tf.DType, where: str):
    if dtype == tf.string:
        if isinstance(value, dict):
            if set(value) != {"b64"} or not isinstance(value["b64"], str):
                raise RequestError(f"{where}: a binary value must be {{\"b64\": \"...\"}}, got {value!r}")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError as err:
                raise RequestError(f"{where}: invalid base64 in {value!r}") from err
        if not isinstance(value, str):
            raise RequestError(f"{where}: expected a string for a DT_STRING input, got {type(value).__name__} {value!r}")
        return value.encode("utf-8")
    if dtype == tf.bool:
        if not isinstance(value, bool):
            raise RequestError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{where}: expected a number for a {dtype.name} input, got {type(value).__name__} {value!r}")
    if dtype.is_integer:
        if isinstance(value, float):  # TF Serving: an integer input takes JSON integers only
            raise RequestError(f"{where}: expected an integer for a {dtype.name} input, got {value!r}")
        if not dtype.min <= value <= dtype.max:
            raise RequestError(f"{where}: {value} is out of range for {dtype.name}")
    return value


def _tensor(values, spec: tf.TensorSpec, where: str) -> np.ndarray:
    """A nested list of JSON values -> ``np.ndarray`` of the spec's dtype, shape checked."""

    def convert(v, path):
        if isinstance(v, list):
            return [convert(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return _scalar(v, spec.dtype, path)

    converted = convert(values, where)
    dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
    uneven = (f"{where}: values of uneven shape" + (
        " (TF Serving takes no ragged lists: pad each row's list with \"\" to the longest, e.g. with "
        "tfmec.export.pad_lists)" if spec.shape.rank == 2 and spec.dtype == tf.string else ""))
    try:
        arr = np.array(converted, dtype=dtype)
    except ValueError as err:
        raise RequestError(uneven) from err
    if spec.dtype == tf.string and arr.dtype == object and arr.ndim and any(isinstance(x, list) for x in arr.ravel()):
        raise RequestError(uneven)
    if not spec.shape.is_compatible_with(arr.shape):
        raise RequestError(f"{where}: shape {list(arr.shape)} does not fit the signature's {spec.shape.as_list()}")
    return arr


@tfmec_export("tfmec.export.request_to_inputs")
def request_to_inputs(payload, specs: dict) -> tuple[dict, str]:
    """Converts a REST request body into signature inputs.

    Args:
        payload: the request body, as a JSON string/bytes or an already parsed dict.
        specs: ``{input name: tf.TensorSpec}`` of the signature (:func:`signature_input_specs`).
    Returns:
        ``({name: np.ndarray}, form)`` with ``form`` ``"row"`` or ``"column"``; every array has the
        batch dimension first.
    Raises:
        RequestError: a body TF Serving would reject (both or neither of instances/inputs, a missing
            or unknown input, a wrong JSON type, uneven batch sizes).
    """
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as err:
            raise RequestError(f"the body is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object with 'instances' or 'inputs'")
    unknown = set(payload) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise RequestError(f"unknown keys in the body: {sorted(unknown)}")
    if ("instances" in payload) == ("inputs" in payload):
        raise RequestError("the body must have exactly one of 'instances' (row form) or 'inputs' (column form)")
    names = list(specs)
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or not rows:
            raise RequestError("'instances' must be a non-empty list")
        columns = {name: [] for name in names}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                if len(names) == 1:
                    row = {names[0]: row}
                else:
                    raise RequestError(f"instances[{i}]: expected an object naming the inputs {names}")
            missing = [n for n in names if n not in row]
            extra = [n for n in row if n not in specs]
            if missing or extra:
                raise RequestError(f"instances[{i}]: missing inputs {missing}, unknown inputs {extra}")
            for name in names:
                columns[name].append(row[name])
        arrays = {n: _tensor(columns[n], specs[n], f"instances[*].{n}") for n in names}
        return arrays, "row"
    inputs = payload["inputs"]
    if not isinstance(inputs, dict) or (len(names) == 1 and names[0] not in inputs):
        if len(names) != 1:
            raise RequestError(f"'inputs' must be an object naming the inputs {names}")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in specs]
    if missing or extra:
        raise RequestError(f"'inputs': missing inputs {missing}, unknown inputs {extra}")
    arrays = {n: _tensor(inputs[n], specs[n], f"inputs.{n}") for n in names}
    sizes = {n: (a.shape[0] if a.ndim else None) for n, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise RequestError(f"'inputs': the inputs have different batch sizes {sizes}")
    return arrays, "column"


@tfmec_export("tfmec.export.pad_lists")
def pad_lists(lists, pad: str = "") -> list:
    """Client-side: rows of a multi-valued field as JSON lists of one length, each padded at the end
    with ``pad`` (``""``, which the SavedModel drops) to the longest row: what a ``tf.string[batch, n]``
    input of TF Serving takes.

    >>> pad_lists([["N1", "N2"], [], ["N3"]])
    [['N1', 'N2'], ['', ''], ['N3', '']]
    """
    rows = [list(r) for r in lists]
    width = max((len(r) for r in rows), default=0)
    return [r + [pad] * (width - len(r)) for r in rows]


def _jsonable(array: np.ndarray):
    if array.dtype == object:
        return [_jsonable(x) for x in array] if array.ndim else array.item().decode("utf-8", "replace")
    return array.tolist()


@tfmec_export("tfmec.export.format_response")
def format_response(outputs: dict, form: str) -> dict:
    """TF Serving's response body for ``outputs`` (``{name: array[batch, ...]}``) of a ``form`` request."""
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    if form == "row":
        if len(arrays) == 1:
            (only,) = arrays.values()
            return {"predictions": _jsonable(only)}
        n = len(next(iter(arrays.values())))
        return {"predictions": [{k: _jsonable(a[i]) for k, a in arrays.items()} for i in range(n)]}
    if form == "column":
        if len(arrays) == 1:
            (only,) = arrays.values()
            return {"outputs": _jsonable(only)}
        return {"outputs": {k: _jsonable(a) for k, a in arrays.items()}}
    raise ValueError(f"form must be 'row' or 'column', got {form!r}")


@tfmec_export("tfmec.export.predict_request")
def predict_request(signatures, payload) -> dict:
    """Answers a ``:predict`` request body like TF Serving, with a loaded SavedModel's signatures.

    Args:
        signatures: ``loaded.signatures`` of ``tf.saved_model.load(path)`` (or one signature function,
            used whatever ``signature_name`` says).
        payload: the request body (JSON text or dict); ``signature_name`` defaults to ``serving_default``.
    Returns:
        the response body as a dict (``{"predictions": ...}`` or ``{"outputs": ...}``).
    """
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the body is not valid JSON: {err}") from None
    if callable(signatures) and hasattr(signatures, "structured_input_signature"):
        fn = signatures
    else:
        name = payload.get("signature_name", "serving_default") if isinstance(payload, dict) else "serving_default"
        if name not in signatures:
            raise RequestError(f"no signature {name!r}; the model has {sorted(signatures)}")
        fn = signatures[name]
    specs = signature_input_specs(fn)
    arrays, form = request_to_inputs(payload, specs)
    outputs = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in arrays.items()})
    return format_response({k: v.numpy() for k, v in outputs.items()}, form)


__all__ = ["RequestError", "request_to_inputs", "format_response", "predict_request", "signature_input_specs"]
