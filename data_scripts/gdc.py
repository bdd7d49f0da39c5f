"""A GDC manifest for TCGA whole-slide images (default: TCGA-NSCLC = TCGA-LUAD + TCGA-LUSC).

The NCI Genomic Data Commons publishes an md5 for every file. This helper asks the GDC API
(`POST <api>/files`) for the open-access diagnostic slides (SVS) of the given projects and
writes two files:

* the manifest the GDC Data Transfer Tool reads (`id filename md5 size state`, tab
  separated), so `gdc-client download -m <manifest>` fetches and md5-checks every slide;
* `labels.csv` beside it, what `ssmamba-lite mil train` reads: slide (the file name without
  .svs, as `wsi extract` names its feature files), label, patient_id (the TCGA case barcode),
  split (empty: none is official, so the MIL code draws a patient-grouped one), path
  (`slides/<file id>/<file name>`, gdc-client's layout) and md5.

The label is the project without its `TCGA-` prefix (LUAD, LUSC; KIRC, KIRP, KICH), or, given
`diagnoses` (a map from the GDC clinical field `diagnoses.primary_diagnosis` to a class, as for
TCGA-BRCA's IDC vs ILC), the class of the case's diagnosis; slides of cases with another
diagnosis, or several, are left out of both files and counted in the summary.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

GDC_API = "https://api.gdc.cancer.gov"
NSCLC = ("TCGA-LUAD", "TCGA-LUSC")
FIELDS = ("file_id", "file_name", "md5sum", "file_size", "state", "cases.submitter_id",
          "cases.project.project_id")
DIAGNOSIS = "cases.diagnoses.primary_diagnosis"


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
                 timeout: float = 60.0, fields: tuple[str, ...] = FIELDS) -> list[dict]:
    """All matching file records, following the API's pagination."""
    import requests

    hits: list[dict] = []
    start = 0
    while True:
        body = {"filters": slide_filters(projects), "fields": ",".join(fields),
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


def _diagnoses(hit: dict) -> set[str]:
    cases = hit.get("cases") or [{}]
    return {str(d.get("primary_diagnosis") or "").strip() for d in cases[0].get("diagnoses") or []
            if str(d.get("primary_diagnosis") or "").strip()}


def label_hits(hits: list[dict], diagnoses: Mapping[str, str] | None = None
               ) -> tuple[list[tuple[dict, str, str]], dict[str, int]]:
    """(hit, label, diagnosis) for each kept slide, and {reason: slides} for those left out."""
    kept, left_out = [], {}
    for h in sorted(hits, key=lambda h: h["file_name"]):
        project = _case(h)[1]
        if diagnoses is None:
            kept.append((h, project.removeprefix("TCGA-"), ""))
            continue
        found = _diagnoses(h)
        if len(found) == 1 and next(iter(found)) in diagnoses:
            diagnosis = next(iter(found))
            kept.append((h, diagnoses[diagnosis], diagnosis))
            continue
        reason = ("no primary_diagnosis" if not found else next(iter(found)) if len(found) == 1
                  else "several diagnoses: " + "; ".join(sorted(found)))
        left_out[reason] = left_out.get(reason, 0) + 1
    return kept, left_out


def write_manifest(kept: list[tuple[dict, str, str]], out: Path) -> tuple[Path, Path]:
    """Write the gdc-client manifest at `out` and labels.csv beside it; return both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        fh.write("id\tfilename\tmd5\tsize\tstate\n")
        for h, _, _ in kept:
            fh.write(f"{h['file_id']}\t{h['file_name']}\t{h['md5sum']}\t{h['file_size']}\t"
                     f"{h.get('state', 'released')}\n")
    labels = out.with_name("labels.csv")
    with_diagnosis = any(d for _, _, d in kept)
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide", "label", "patient_id", "split", "path", "md5"]
                        + (["primary_diagnosis"] if with_diagnosis else []))
        for h, label, diagnosis in kept:
            writer.writerow([Path(h["file_name"]).stem, label, _case(h)[0], "",
                             f"slides/{h['file_id']}/{h['file_name']}", h["md5sum"]]
                            + ([diagnosis] if with_diagnosis else []))
    return out, labels


def make_manifest(out: Path, projects=NSCLC, api: str = GDC_API,
                  diagnoses: Mapping[str, str] | None = None) -> str:
    """Query the GDC and write manifest + labels; return a one-line summary."""
    fields = FIELDS + ((DIAGNOSIS,) if diagnoses is not None else ())
    hits = query_slides(projects, api, fields=fields)
    if not hits:
        raise GDCError(f"the GDC returned no open diagnostic slides for {', '.join(projects)}")
    kept, left_out = label_hits(hits, diagnoses)
    if not kept:
        raise GDCError(f"none of the {len(hits)} slides has a diagnosis among "
                       f"{', '.join(diagnoses or {})}")
    manifest, labels = write_manifest(kept, out)
    total = sum(int(h["file_size"]) for h, _, _ in kept)
    per: dict[str, int] = {}
    for h, label, _ in kept:  # per project (TCGA-LUAD 2), or per class where diagnoses decide
        key = _case(h)[1] if diagnoses is None else label
        per[key] = per.get(key, 0) + 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(per.items()))
    dropped = ""
    if left_out:
        top = sorted(left_out.items(), key=lambda kv: (-kv[1], kv[0]))
        dropped = (f"; left out {sum(left_out.values())} slides of other diagnoses ("
                   + ", ".join(f"{k}: {v}" for k, v in top) + ")")
    return (f"{len(kept)} slides ({counts}), {total / 1e9:.1f} GB in total -> {manifest} and "
            f"{labels}{dropped}; next: gdc-client download -m {manifest} -d "
            f"{manifest.parent / 'slides'}")


if __name__ == "__main__":  # pragma: no cover - manual use: python -m data_scripts.gdc OUT
    import sys

    print(make_manifest(Path(sys.argv[1] if len(sys.argv) > 1 else "gdc_manifest.txt")))
