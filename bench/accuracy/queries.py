"""Makes (or reuses) the query files: every family applied to every source and held-out photo."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.accuracy import transforms
from bench.accuracy.corpus import Corpus, Item
from bench.accuracy.imaging import open_rgb
from bench.accuracy.progress import Progress, log
from bench.accuracy.transforms import BURST_FAMILY, FAMILIES, Params, make_query


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    family: str
    source: str | None  # the id of the indexed source; None when the photo is not indexed
    photo: str  # the photo it was made from (a source id, or a held-out id)
    origin: str
    file: str  # relative to the queries folder
    params: Params


def build(corpus: Corpus, families: Sequence[str], workers: int) -> tuple[Path, list[Query]]:
    """The queries folder and its queries, made once per corpus, family list and transform code."""
    folder = corpus.root / "queries"
    manifest = folder / "queries.json"
    fingerprint = _fingerprint(corpus, families)
    if manifest.is_file():
        raw = json.loads(manifest.read_text())
        if raw.get("fingerprint") == fingerprint:
            found = [Query(**q) for q in raw["queries"]]
            if all((folder / q.file).is_file() for q in found):
                log(f"queries: reusing {len(found)} queries in {folder}")
                return folder, found
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    # Frame a of each burst pair is a source of the burst family only (b is its sibling).
    frames = [i for i in corpus.of_role("burst") if i.id.endswith("-a.jpg")]
    photos = corpus.of_role("source") + corpus.of_role("heldout") + frames
    jobs = [
        (
            str(corpus.path_of(item)),
            item.id,
            item.role,
            tuple(families),
            str(folder),
            n,
            corpus.spec.seed,
        )
        for n, item in enumerate(photos)
    ]
    queries: list[Query] = []
    progress = Progress(f"making queries ({len(families)} families)", len(jobs) * len(families))
    by_id = {item.id: item for item in photos}
    with ProcessPoolExecutor(workers) as pool:
        for made in pool.map(_make_for_photo, jobs, chunksize=4):
            for family, file, params, photo_id in made:
                item: Item = by_id[photo_id]
                queries.append(
                    Query(
                        id=file.rsplit(".", 1)[0],
                        family=family,
                        source=item.id if item.role in ("source", "burst") else None,
                        photo=item.id,
                        origin=item.origin,
                        file=file,
                        params=params,
                    )
                )
            progress.step(len(made))
    progress.close()
    payload = {"fingerprint": fingerprint, "queries": [asdict(q) for q in queries]}
    manifest.write_text(json.dumps(payload))
    return folder, queries


def _fingerprint(corpus: Corpus, families: Sequence[str]) -> str:
    digest = hashlib.sha256()
    digest.update((corpus.root / "corpus.json").read_bytes())
    digest.update(Path(transforms.__file__).read_bytes())
    digest.update(",".join(families).encode())
    return digest.hexdigest()


def _make_for_photo(
    job: tuple[str, str, str, tuple[str, ...], str, int, int],
) -> list[tuple[str, str, Params, str]]:
    path, photo_id, role, families, folder, number, seed = job
    image = open_rgb(Path(path).read_bytes())
    made: list[tuple[str, str, Params, str]] = []
    prefix = {"source": "src", "burst": "burst"}.get(role, "nosrc")
    for family in families:
        if (family == BURST_FAMILY) != (role == "burst") and role != "heldout":
            continue
        data, params = make_query(image, FAMILIES[family], seed=f"{seed}:{photo_id}")
        file = f"{family}/{prefix}-{number:05d}.jpg"
        target = Path(folder) / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        made.append((family, file, params, photo_id))
    return made
