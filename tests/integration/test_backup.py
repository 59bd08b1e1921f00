"""Backup and restore of the index: the real CLI, real embedded Qdrant, real servers."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from imgsearch.cli import main
from imgsearch.settings import StoreEngine
from imgsearch.store import VECTOR_NAME, RawPoint, StoreLocation
from imgsearch.store.backup import BackupError, backup_to_file, restore_from_file, verify
from imgsearch.store.edge import EdgeStore
from tests.conftest import Served
from tests.imaging import crop, encode, load
from tests.registry import sample

DIM = 48


def _operations(op: str) -> float:
    return sample("imgsearch_index_operations_total", op=op)


def test_restored_index_serves_the_same_results_without_re_embedding(
    serve: Callable[..., Served],
    photo_folder: Path,
    sample_photos: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = serve(photo_folder, tmp_path / "data")
    first.wait_idle()
    queries = [encode(crop(load(p), 0.5), quality=40) for p in sample_photos[:4]]
    before = [first.client.search(q, limit=5).matches for q in queries]
    assert [m[0].path for m in before] == [p.name for p in sample_photos[:4]]

    backup_file = tmp_path / "backup" / "images.jsonl.gz"
    backup_file.parent.mkdir()
    # A running service holds the embedded store: the backup refuses instead of racing it.
    assert main(["backup", "--data", str(tmp_path / "data"), str(backup_file)]) == 4  # failed
    assert "in use by another process" in capsys.readouterr().err
    assert not backup_file.exists()
    first.stop()

    assert main(["backup", "--data", str(tmp_path / "data"), str(backup_file)]) == 0
    points = len(sample_photos)  # one point per image (regions are off by default)
    # The collection of the serving model (an embedded index keeps one per model).
    collection = f"images-{first.app.encoder.key}"
    assert f"backed up {points} points of '{collection}'" in capsys.readouterr().out
    assert list(backup_file.parent.iterdir()) == [backup_file]  # no .partial left behind
    assert main(["restore", "--data", str(tmp_path / "restored"), str(backup_file)]) == 0
    assert f"restored {points} points" in capsys.readouterr().out

    embedded, reused = _operations("embedded"), _operations("reused")
    second = serve(photo_folder, tmp_path / "restored")
    second.wait_idle()
    status = second.client.status()
    assert (status.indexed, status.failed) == (len(sample_photos), 0)
    after = [second.client.search(q, limit=5).matches for q in queries]
    assert [[m.path for m in ms] for ms in after] == [[m.path for m in ms] for ms in before]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_allclose([m.score for m in new], [m.score for m in old], atol=1e-5)
    # The restored index matched the folder: not one file was embedded or even re-read.
    assert (_operations("embedded"), _operations("reused")) == (embedded, reused)


def _unit(rng: np.random.Generator) -> list[float]:
    vector = rng.normal(size=DIM).astype(np.float32)
    return (vector / np.linalg.norm(vector)).tolist()  # type: ignore[no-any-return]


def _fill(
    path: Path, count: int, engine: StoreEngine = StoreEngine.LOCAL
) -> dict[str, tuple[list[float], dict[str, object]]]:
    """An embedded store with `count` points of random vectors and varied payloads."""
    rng = np.random.default_rng(7)
    points = {
        f"00000000-0000-0000-0000-{i:012d}": (
            _unit(rng),
            {"path": f"d{i % 3}/ü {i}.jpg", "size": i, "folders": [f"d{i % 3}"], "x": None},
        )
        for i in range(count)
    }
    if engine is StoreEngine.EDGE:
        store = EdgeStore.open_path(path, collection="images", dimensions=DIM, model="m")
        store.write_raw([RawPoint(pid, v, p) for pid, (v, p) in points.items()])
        store.close()
        return points
    client = QdrantClient(path=str(path))
    client.create_collection(
        "images",
        vectors_config={
            VECTOR_NAME: models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        },
    )
    client.upsert(
        "images",
        points=[
            models.PointStruct(id=pid, vector={VECTOR_NAME: vector}, payload=payload)
            for pid, (vector, payload) in points.items()
        ],
    )
    client.close()
    return points


def _read_all(
    path: Path, engine: StoreEngine = StoreEngine.LOCAL
) -> dict[str, tuple[list[float], dict[str, object]]]:
    if engine is StoreEngine.EDGE:
        store = EdgeStore.open_existing(path, collection="images")
        assert store is not None
        found = {str(p.id): (p.vector, p.payload) for p in store.raw_points()}
        store.close()
        return found
    client = QdrantClient(path=str(path))
    records, _ = client.scroll("images", limit=10_000, with_vectors=True)
    client.close()
    return {
        str(r.id): (r.vector[VECTOR_NAME], r.payload or {})  # type: ignore[index]
        for r in records
    }


@pytest.mark.parametrize(
    ("name", "source", "copy"),
    [
        ("points.jsonl", StoreEngine.LOCAL, StoreEngine.LOCAL),
        ("points.jsonl.gz", StoreEngine.LOCAL, StoreEngine.EDGE),  # moving to the edge engine
        ("points.jsonl.gz", StoreEngine.EDGE, StoreEngine.EDGE),
        ("points.jsonl", StoreEngine.EDGE, StoreEngine.LOCAL),
    ],
    ids=["local", "local-to-edge", "edge", "edge-to-local"],
)
def test_round_trip_is_exact_and_damaged_files_are_refused(
    tmp_path: Path, name: str, source: StoreEngine, copy: StoreEngine
) -> None:
    original = _fill(tmp_path / "source", 300, source)  # more than one scroll page
    out = tmp_path / name
    assert (
        backup_to_file(StoreLocation(path=tmp_path / "source", engine=source), "images", out) == 300
    )
    header, count = verify(out)
    assert (header.size, header.distance, count) == (DIM, "Cosine", 300)
    if source is StoreEngine.EDGE:
        assert header.payload_indexes == {
            "region": "integer",
            "folders": "keyword",
            "sha256": "keyword",
            "path": "keyword",
        }

    into = StoreLocation(path=tmp_path / "copy", engine=copy)
    assert restore_from_file(into, "images", out) == 300
    copied = _read_all(tmp_path / "copy", copy)
    assert copied.keys() == original.keys()
    for pid, (vector, payload) in original.items():
        np.testing.assert_allclose(copied[pid][0], vector, atol=1e-6)
        assert copied[pid][1] == payload

    # A second restore over the now full collection needs --merge, which changes nothing.
    with pytest.raises(BackupError, match="already holds 300 points"):
        restore_from_file(into, "images", out)
    assert restore_from_file(into, "images", out, merge=True) == 300
    assert len(_read_all(tmp_path / "copy", copy)) == 300

    # A cut-off file is refused before anything is written.
    opener = gzip.open if name.endswith(".gz") else open
    with opener(out, "rt") as stream:
        lines = stream.read().splitlines(keepends=True)
    truncated = tmp_path / ("cut-" + name)
    with opener(truncated, "wt") as stream:
        stream.writelines(lines[:-1])
    with pytest.raises(BackupError, match="truncated: no trailer line after 300 points"):
        restore_from_file(StoreLocation(path=tmp_path / "empty", engine=copy), "images", truncated)
    assert not (tmp_path / "empty").exists()

    # So are a damaged vector and a backup made with another vector size.
    bad = json.loads(lines[1])
    bad["vector"] = bad["vector"][:-8]
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(lines[0] + json.dumps(bad) + "\n" + lines[-1])
    with pytest.raises(BackupError, match=r"damaged.jsonl:2: vector has \d+ values, not 48"):
        verify(damaged)
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(BackupError, match="not an imgsearch backup"):
        verify(other)


@pytest.mark.parametrize("engine", [StoreEngine.LOCAL, StoreEngine.EDGE], ids=str)
def test_restore_refuses_a_collection_of_another_size(tmp_path: Path, engine: StoreEngine) -> None:
    _fill(tmp_path / "source", 3, engine)
    out = tmp_path / "b.jsonl"
    backup_to_file(StoreLocation(path=tmp_path / "source", engine=engine), "images", out)
    if engine is StoreEngine.EDGE:
        EdgeStore.open_path(
            tmp_path / "other", collection="images", dimensions=8, model="m"
        ).close()
    else:
        client = QdrantClient(path=str(tmp_path / "other"))
        client.create_collection(
            "images",
            vectors_config={
                VECTOR_NAME: models.VectorParams(size=8, distance=models.Distance.COSINE)
            },
        )
        client.close()
    with pytest.raises(BackupError, match=r"does not fit the backup: .* size 8, but .* makes 48"):
        restore_from_file(StoreLocation(path=tmp_path / "other", engine=engine), "images", out)
    with pytest.raises(BackupError, match="no embedded store"):
        backup_to_file(StoreLocation(path=tmp_path / "nowhere", engine=engine), "images", out)
    with pytest.raises(BackupError, match="collection 'photos' does not exist"):
        backup_to_file(
            StoreLocation(path=tmp_path / "source", engine=engine), "photos", tmp_path / "c.jsonl"
        )
    assert not (tmp_path / "c.jsonl").exists()
