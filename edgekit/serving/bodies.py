"""The bodies of `POST /infer`: feeds from JSON, .npy or .npz against the package's input specs, outputs as JSON, .npy
or .npz. A body is someone else's bytes: nothing is unpickled, and an array header must not claim more data than the
body holds (numpy would allocate what it claims before reading)."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping

import numpy as np
from numpy.lib import format as npy_format

from edgekit.errors import gist
from edgekit.spec import TensorSpec

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"
ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu"}  # spec dtype kind → the kinds of JSON arrays it takes (else its own)


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and one line for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(header: str) -> str:
    return header.partition(";")[0].strip().lower()


def decode_feeds(body: bytes, content_type: str, specs: tuple[TensorSpec, ...], limit: int) -> dict[str, np.ndarray]:
    """Feeds by input name from a body of `content_type` (JSON when none is given); `limit` bounds an .npz's
    uncompressed size."""
    kind = media_type(content_type) or JSON
    if kind == JSON:
        return _json_feeds(body, specs)
    if kind == NPY:
        if len(specs) != 1:
            raise BadRequest(400, f"an .npy body holds one array but the model takes {len(specs)} inputs "
                                  f"({', '.join(spec.name for spec in specs)}): send .npz ({NPZ}) or JSON")
        return {specs[0].name: npy_array(body)}
    if kind == NPZ:
        return _npz_arrays(body, limit)
    raise BadRequest(415, f"Content-Type {kind} is not one of {JSON}, {NPY}, {NPZ}")


def _json_feeds(body: bytes, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise BadRequest(400, f"body is not JSON: {gist(error)}") from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, dict):
        raise BadRequest(400, 'expected a JSON object {"inputs": {"NAME": nested list of numbers, ...}}')
    known = {spec.name: spec for spec in specs}
    unknown = [name for name in inputs if name not in known]
    if unknown:
        raise BadRequest(400, f"unknown input(s) {', '.join(unknown)} (the model takes {', '.join(known)})")
    return {name: _json_array(value, known[name]) for name, value in inputs.items()}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _json_array(value: object, spec: TensorSpec) -> np.ndarray:
    """A nested list as an array of the spec's dtype; numbers of another kind (floats for an int input) are refused,
    as are ints out of the dtype's range."""
    dtype = np.dtype(spec.dtype)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(400, f"input '{spec.name}': not a rectangular nested list of numbers") from None
    if array.dtype.kind not in ACCEPTED_KINDS.get(dtype.kind, dtype.kind):
        raise BadRequest(400, f"input '{spec.name}': expected {spec.dtype} values, got "
                              f"{'nested lists of other things' if array.dtype.kind in 'OUS' else array.dtype.name}")
    if dtype.kind in "iu" and array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
        raise BadRequest(400, f"input '{spec.name}': values outside the range of {spec.dtype}")
    return array.astype(dtype)


def npy_array(data: bytes) -> np.ndarray:
    """The array an .npy file holds, refused unless its header is version 1 or 2, its dtype holds no objects and the
    data it declares is in `data`."""
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not taken (1.0 and 2.0 are)")
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError("it holds Python objects, which are never unpickled here")
        declared = math.prod(shape) * dtype.itemsize
        if declared > len(data) - stream.tell():
            raise ValueError(f"its header declares {declared} bytes of data but it holds {len(data) - stream.tell()}")
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
    except Exception as error:  # whatever a hostile body makes numpy raise: refused with its reason
        raise BadRequest(400, f"body is not a valid .npy array: {gist(error)}") from None


def _npz_arrays(data: bytes, limit: int) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            unpacked = sum(member.file_size for member in members)
            if unpacked > limit:
                raise BadRequest(413, f"the .npz unpacks to {unpacked} bytes, over the {limit} byte limit")
            return {member.filename.removesuffix(".npy"): npy_array(archive.read(member)) for member in members}
    except BadRequest:
        raise
    except Exception as error:  # a broken or hostile archive
        raise BadRequest(400, f"body is not a valid .npz archive: {gist(error)}") from None


def encode_outputs(outputs: Mapping[str, np.ndarray], accept: str) -> tuple[bytes, str]:
    """(body, media type): .npy or .npz where `accept` asks for it, else JSON {"outputs": {name: nested list}}."""
    wanted = {media_type(part) for part in accept.split(",")}
    if NPY in wanted:
        if len(outputs) != 1:
            raise BadRequest(406, f"the model gives {len(outputs)} outputs ({', '.join(outputs)}): accept {NPZ} or {JSON}")
        stream = io.BytesIO()
        np.save(stream, next(iter(outputs.values())), allow_pickle=False)
        return stream.getvalue(), NPY
    if NPZ in wanted:  # written as np.savez writes it, without its keywords: outputs may be named `file`, `allow_pickle`
        stream = io.BytesIO()
        with zipfile.ZipFile(stream, "w", allowZip64=True) as archive:
            for name, value in outputs.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    npy_format.write_array(member, value, allow_pickle=False)
        return stream.getvalue(), NPZ
    document = {"outputs": {name: value.tolist() for name, value in outputs.items()}}
    return json.dumps(document, separators=(",", ":")).encode(), JSON


def error_body(message: str) -> bytes:
    """One line of JSON: {"error": "..."}."""
    return json.dumps({"error": " ".join(message.split())}).encode() + b"\n"
