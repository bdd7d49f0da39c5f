"""A GDC manifest for TCGA whole-slide images (default: TCGA-NSCLC = TCGA-LUAD + TCGA-LUSC).

The NCI Genomic Data Commons publishes an md5 for every file. This helper asks the GDC API
(`POST <api>/files`) for the open-access diagnostic slides (SVS) of the given projects and
writes two files:

* the manifest the GDC Data Transfer Tool reads (`id filename md5 size state`, tab
  separated), so `gdc-client download -m <manifest>` fetches and md5-checks every slide;
* `labels.csv` beside it: path (`slides/<file id>/<file name>`, gdc-client's layout), label
  (the project without its `TCGA-` prefix, e.g. LUAD), split (`all`) and patient_id (the TCGA
  case barcode), for patient-grouped splits.
"""

from __future__ import annotations

import csv
from pathlib import Path

GDC_API = "https://api.gdc.cancer.gov"
NSCLC = ("TCGA-LUAD", "TCGA-LUSC")
FIELDS = ("file_id", "file_name", "md5sum", "file_size", "state", "cases.submitter_id",
          "cases.project.project_id")


class GDCError(Exception):
    """The GDC API could not be reached or answered something unexpected."""


def slide_filters(projects: tuple[str, ...] | list[str]) -> dict:
    """GDC filter: open-access SVS diagnostic slides of `projects`."""
    def is_in(field: str, values: list[str]) -> dict:
        return {"op": "in", "content": {"field": field, "value": values}}

    return {"op": "and", "content": [
        is_in("cases.project.project_id", list(projects)),
        is_in("files.data_type", ["Slide Image"]),
        is_in("files.experimental_strategy", ["Diagnostic Slide"]),
        is_in("files.data_format", ["SVS"]),
        is_in("files.access", ["open"]),
    ]}


def query_slides(projects=NSCLC, api: str = GDC_API, page: int = 2000,
                 timeout: float = 60.0) -> list[dict]:
    """All matching file records, following the API's pagination."""
    import requests

    hits: list[dict] = []
    start = 0
    while True:
        body = {"filters": slide_filters(projects), "fields": ",".join(FIELDS),
                "format": "JSON", "size": str(page), "from": str(start)}
        try:
            resp = requests.post(f"{api.rstrip('/')}/files", json=body, timeout=timeout)
            resp.raise_for_status()
            data = resp.json()["data"]
        except (requests.RequestException, ValueError, KeyError) as err:
            raise GDCError(f"GDC API {api}/files: {type(err).__name__}: {err}") from None
        hits.extend(data["hits"])
        total = int(data.get("pagination", {}).get("total", len(hits)))
        if not data["hits"] or len(hits) >= total:
            return hits
        start = len(hits)


def _case(hit: dict) -> tuple[str, str]:
    cases = hit.get("cases") or [{}]
    project = (cases[0].get("project") or {}).get("project_id", "")
    return cases[0].get("submitter_id", ""), project


def write_manifest(hits: list[dict], out: Path) -> tuple[Path, Path]:
    """Write the gdc-client manifest at `out` and labels.csv beside it; return both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(hits, key=lambda h: h["file_name"])
    with open(out, "w", newline="") as fh:
        fh.write("id\tfilename\tmd5\tsize\tstate\n")
        for h in rows:
            fh.write(f"{h['file_id']}\t{h['file_name']}\t{h['md5sum']}\t{h['file_size']}\t"
                     f"{h.get('state', 'released')}\n")
    labels = out.with_name("labels.csv")
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split", "patient_id", "md5"])
        for h in rows:
            patient, project = _case(h)
            label = project.removeprefix("TCGA-")
            writer.writerow([f"slides/{h['file_id']}/{h['file_name']}", label, "all", patient,
                             h["md5sum"]])
    return out, labels


def make_manifest(out: Path, projects=NSCLC, api: str = GDC_API) -> str:
    """Query the GDC and write manifest + labels; return a one-line summary."""
    hits = query_slides(projects, api)
    if not hits:
        raise GDCError(f"the GDC returned no open diagnostic slides for {', '.join(projects)}")
    manifest, labels = write_manifest(hits, out)
    total = sum(int(h["file_size"]) for h in hits)
    per: dict[str, int] = {}
    for h in hits:
        project = _case(h)[1]
        per[project] = per.get(project, 0) + 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(per.items()))
    return (f"{len(hits)} slides ({counts}), {total / 1e9:.1f} GB in total -> {manifest} and "
            f"{labels}; next: gdc-client download -m {manifest} -d {manifest.parent / 'slides'}")


if __name__ == "__main__":  # pragma: no cover - manual use: python -m data_scripts.gdc OUT
    import sys

    print(make_manifest(Path(sys.argv[1] if len(sys.argv) > 1 else "gdc_manifest.txt")))
