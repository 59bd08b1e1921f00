"""What the command line prints: search results and status as text for people, JSON for scripts.

JSON carries every field, defaults included, numbers as JSON numbers: protobuf's own JSON
mapping writes 64-bit integers as strings and drops fields at their default, which a script
reading `indexed` or `match` should not have to know.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from imgsearch.v1 import embedder_pb2, searcher_pb2

_FLOAT_DIGITS = 6  # what a float32 holds


def message_json(message: Message) -> dict[str, Any]:
    """Every field of `message` by its proto name, numbers as numbers, nested messages as
    objects, repeated fields as lists."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [_value(field, item) for item in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: Any, value: Any) -> Any:  # noqa: ANN401 - protobuf's descriptor types vary
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return round(float(value), _FLOAT_DIGITS)
    return value


def search_json(query: str, response: searcher_pb2.SearchResponse) -> str:
    """One line of JSON for one query: the response, the query's name and the verdict."""
    return json.dumps(
        {"query": query, "source_found": source_found(response), **message_json(response)}
    )


def status_json(status: embedder_pb2.GetStatusResponse) -> str:
    return json.dumps(message_json(status), indent=2)


def source_found(response: searcher_pb2.SearchResponse) -> bool:
    return any(m.match for m in response.matches)


def search_text(response: searcher_pb2.SearchResponse) -> str:
    if not response.matches:
        return "no images indexed yet"
    lines = [f"{'rank':>4}  {'score':>6}  {'margin':>6}  {'verdict':<7}  path"]
    for rank, match in enumerate(response.matches, 1):
        verdict = "SOURCE" if match.match else "similar"
        # A verified candidate ranks by its keypoints, so it can stand above higher scores.
        checked = f"  ({match.inliers} keypoints agree)" if match.inliers else ""
        lines.append(
            f"{rank:>4}  {match.score:6.3f}  {match.margin:6.3f}  {verdict:<7}  {match.path}"
            f"{checked}"
        )
    sources = [m.path for m in response.matches if m.match]
    if sources:
        lines.append(f"\nverdict: source found: {', '.join(sources)}")
    else:
        best = response.matches[0].margin
        lines.append(
            f"\nverdict: no source in the index "
            f"(best margin {best:.3f} < threshold {response.match_threshold:.3f})"
        )
    if response.whitened:
        lines.append("scores are whitened (learned on this folder's images)")
    return "\n".join(lines)


def status_text(status: embedder_pb2.GetStatusResponse) -> str:
    observer = f" ({status.observer} events)" if status.observer else ""
    lines = [
        f"folder:   {status.folder}",
        f"state:    {status.state}{observer}",
        f"indexed:  {status.indexed}",
        f"pending:  {status.pending}",
    ]
    if status.pending and status.index_rate:
        lines.append(f"rate:     {status.index_rate:.1f} images/s, eta {status.eta_seconds:.0f} s")
    if status.held_deletions:
        lines.append(
            f"held:     {status.held_deletions} missing files kept in the index "
            "(confirm with `imgsearch rescan --allow-mass-delete`)"
        )
    lines.append(f"failed:   {status.failed}")
    lines += [f"  {failure.path}: {failure.reason}" for failure in status.failures]
    lines.append(f"model:    {status.model} ({status.dimensions} dimensions)")
    if status.model_reason:
        lines.append(f"          {status.model_reason}")
    if status.graph_state != "off":
        lines.append(graph_text(status))
    return "\n".join(lines)


def graph_text(status: embedder_pb2.GetStatusResponse) -> str:
    """The search graph's line: how much of the index searches walk, how much they scan."""
    line = (
        f"graph:    {status.graph_state}, {status.graph_vectors} vectors in the graph, "
        f"{status.scanned_vectors} scanned"
    )
    if status.last_graph_build:
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(status.last_graph_build))
        line += f"; last built {built} in {status.last_graph_build_seconds:.0f} s"
    if status.graph_error:
        line += f"\n          last build failed: {status.graph_error}"
    return line


def group_json(group: searcher_pb2.DuplicateGroup) -> str:
    """One line of JSON for one group of copies."""
    return json.dumps(message_json(group))


CSV_HEADER = ("group", "first", "second", "score", "margin", "inliers", "x0", "y0", "x1", "y1")


def group_csv_rows(number: int, group: searcher_pb2.DuplicateGroup) -> str:
    """CSV rows (no header) for the pairs of group `number`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for p in group.pairs:
        r = p.region
        writer.writerow(
            [number, p.first, p.second, f"{p.score:.4f}", f"{p.margin:.4f}", p.inliers]
            + [f"{v:.4f}" for v in (r.x0, r.y0, r.x1, r.y1)]
        )
    return out.getvalue().rstrip("\n")


def group_text(number: int, group: searcher_pb2.DuplicateGroup) -> str:
    lines = [f"group {number}: {len(group.paths)} files"]
    lines += [f"  {path}" for path in group.paths]
    lines += [
        f"    {p.score:.3f}  margin {p.margin:.3f}  {p.first}  ~  {p.second}" for p in group.pairs
    ]
    return "\n".join(lines)


def duplicates_summary(groups: Iterable[searcher_pb2.DuplicateGroup], images: int) -> str:
    listed = list(groups)
    files = sum(len(g.paths) for g in listed)
    if not listed:
        return f"no copies among {images} images"
    return f"{len(listed)} groups of copies ({files} files) among {images} images"
