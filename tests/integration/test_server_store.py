"""The Qdrant server store's search requests: the client calls a server gets, made here on
qdrant-client's local mode (no server binary is reachable; the calls are the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgsearch.descriptors import DescriptorSet
from imgsearch.store.base import HNSW_EF, FileState
from imgsearch.store.qdrant import QdrantStore

DIM = 16


@pytest.mark.parametrize("grouped", [False, True], ids=["one-point-per-image", "grouped"])
def test_a_server_is_asked_for_the_graph_candidate_list_the_embedded_store_uses(
    tmp_path: Path, grouped: bool
) -> None:
    """A server walks its graph with Qdrant's default candidate list (ef_construct, 100)
    unless asked, which at 1M vectors loses recall the embedded store keeps (hnsw.md). Local
    mode searches exactly and warns at search parameters, so it is asked for none."""
    local = QdrantStore.connect(
        dimensions=DIM, model="test", collection="images", path=tmp_path, grouped=grouped
    )
    client: Any = local._client
    method = "query_points_groups" if grouped else "query_points"
    real = getattr(client, method)
    asked: list[Any] = []

    def recording(*args: Any, search_params: Any = None, **kwargs: Any) -> Any:
        asked.append(search_params)
        return real(*args, **kwargs)  # local mode would only warn that it ignores them

    setattr(client, method, recording)
    # The same collection through the same client, as the store serves a server's.
    served_as_server = QdrantStore(client, "images", DIM, "test", local=False, grouped=grouped)
    try:
        vectors = np.eye(DIM, dtype=np.float32)[:4]
        box = np.asarray([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
        local.upsert(
            [
                (FileState(f"photo-{i}.jpg", 1, 1, f"{i:064x}"), DescriptorSet(v[None], box))
                for i, v in enumerate(vectors)
            ]
        )
        from_local = local.search(vectors[2][None], 2)
        from_server = served_as_server.search(vectors[2][None], 2)
    finally:
        local.close()
    assert [h.path for h in from_local] == [h.path for h in from_server]
    assert from_server[0].path == "photo-2.jpg" and from_server[0].score == pytest.approx(1.0)
    assert asked[0] is None and asked[1].hnsw_ef == HNSW_EF and len(asked) == 2
