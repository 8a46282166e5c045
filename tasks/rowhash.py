"""64-bit keys of table rows (and of vector rows), computed column-wise with numpy: no Python
object per value. What the incremental dedupe compares between runs to tell an unchanged row from a
changed one (:func:`embedline.tasks.dedupe._row_keys`).

A row's string values are concatenated by Arrow and hashed once (XXH3-64, read in place from the
Arrow buffer: no Python string per value); each value's length and validity and each integer are
mixed in column-wise (splitmix64's finaliser), so the concatenation is unambiguous; the vector row
is hashed from its float32 bytes. Keys are a pure function of the values (the same on every run and
machine); two different rows share a key with probability ~2^-64.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x6A09E667F3BCC909)
LIST_SEP = "\x1f"  # joins a list of strings into one value (ASCII unit separator)
NULL_ITEM = "\x00\x1enull\x1e\x00"  # stands for a null element of such a list


def mix(x: np.ndarray | np.uint64) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def _binary_hash(arr: pa.Array, salt: int) -> np.ndarray:
    """Per value of a string/binary array: XXH3-64 of its bytes, read in place from the Arrow
    buffer (no Python string per value); nulls: a constant."""
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8).tolist()
    data = memoryview(bufs[2] if bufs[2] is not None else b"")
    digest = xxhash.xxh3_64_intdigest
    out = np.fromiter((digest(data[a:b], seed=salt) for a, b in itertools.pairwise(offsets)),
                      dtype=np.uint64, count=n)
    if arr.null_count:
        out[~np.asarray(arr.is_valid())] = mix(np.uint64(salt) ^ _NULL)
    return out


def vector_hash(vectors: np.ndarray, salt: int = 255) -> np.ndarray:
    """Per row of a 2-d float32 array: XXH3-64 of its bytes."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if not v.size:
        return np.zeros(len(v), dtype=np.uint64)
    data = memoryview(v.data).cast("B")
    step = v.shape[1] * 4
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(data[k : k + step], seed=salt) for k in range(0, len(data), step)),
                       dtype=np.uint64, count=len(v))


def _int_array(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr.cast(pa.int64()), -1)).view(np.uint64)


def row_keys(table: pa.Table | pa.RecordBatch, vectors: np.ndarray | None = None) -> np.ndarray:
    """Per row: a 64-bit key of every column of ``table`` (in order) and of its vector row.

    One XXH3 call per row: the row's string values (lists of strings joined) are concatenated
    by Arrow, and each value's length and validity (and each integer) are mixed in column-wise,
    so the concatenation is unambiguous."""
    n = table.num_rows
    strings: list[pa.Array] = []
    ints: list[np.ndarray] = []
    for i in range(table.num_columns):
        col = table.column(i)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        t = col.type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            ints.append(_int_array(pc.list_value_length(col)))  # a null list: -1
            if col.values.null_count:  # binary_join makes a list holding a null element null
                col = pa.ListArray.from_arrays(col.offsets, pc.fill_null(col.values, NULL_ITEM), mask=pc.is_null(col))
            col = pc.binary_join(col, LIST_SEP)
        elif pa.types.is_integer(t) or pa.types.is_boolean(t):
            ints.append(_int_array(col))
            ints.append(np.asarray(col.is_valid()).astype(np.uint64))
            continue
        col = col.cast(pa.large_binary())
        ints.append(_int_array(pc.binary_length(col)))  # a null value: -1
        strings.append(col)
    key = np.full(n, _GOLDEN, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for salt, values in enumerate(ints):
            key = mix(key * _M1 ^ mix(values ^ (_GOLDEN * np.uint64(salt + 1))))
        if strings:
            joined = pc.binary_join_element_wise(*strings, pa.scalar(b"", pa.large_binary()), null_handling="replace")
            key = mix(key * _M1 ^ _binary_hash(joined, 0))
        if vectors is not None:
            key = mix(key * _M1 ^ vector_hash(vectors))
    return key
