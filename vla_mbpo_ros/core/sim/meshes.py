"""Cheap visual copies of the arm's CAD meshes, for software rendering.

The SO-101 STL files hold ~320k triangles; at 96x96 pixels nearly all of them are sub-pixel, and
a software rasteriser (Mesa llvmpipe under EGL) spends its time on vertex work. Vertex clustering
(merge all vertices that fall in one grid cell, drop triangles that collapse) keeps the silhouette
to within one cell and removes most triangles. Only rendering uses the copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_STL_HEADER_BYTES = 80
_STL_TRIANGLE_DTYPE = np.dtype(
    [("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")]
)


def read_binary_stl(path: str | Path) -> np.ndarray:
    """Triangles of a binary STL file as an (n, 3, 3) float64 array of vertex positions."""
    raw = Path(path).read_bytes()
    count = int(np.frombuffer(raw, dtype="<u4", count=1, offset=_STL_HEADER_BYTES)[0])
    expected = _STL_HEADER_BYTES + 4 + count * _STL_TRIANGLE_DTYPE.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: not a binary STL ({len(raw)} bytes, header says {expected})")
    records = np.frombuffer(raw, dtype=_STL_TRIANGLE_DTYPE, count=count, offset=_STL_HEADER_BYTES + 4)
    return records["vertices"].astype(np.float64)


def cluster_decimate(triangles: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex-clustering decimation of a triangle soup.

    Returns ``(vertices (v, 3), faces (f, 3) int32)``; each output vertex is the mean of the
    input vertices in its grid cell. Triangles whose corners share a cell are dropped, as are
    duplicates.
    """
    if cell <= 0:
        raise ValueError(f"cell must be > 0, got {cell}")
    corners = triangles.reshape(-1, 3)
    keys = np.floor(corners / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    vertices = np.zeros((counts.size, 3))
    np.add.at(vertices, cluster, corners)
    vertices /= counts[:, None]
    faces = cluster.reshape(-1, 3)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    # Same triangle with the same winding, whichever corner is listed first.
    shift = np.argmin(faces, axis=1)
    canonical = faces[np.arange(len(faces))[:, None], (np.arange(3)[None, :] + shift[:, None]) % 3]
    _, first = np.unique(canonical, axis=0, return_index=True)
    faces = faces[np.sort(first)]
    used, faces = np.unique(faces, return_inverse=True)
    return vertices[used], faces.reshape(-1, 3).astype(np.int32)
