"""Read the cells of an .xlsx sheet with the standard library (no openpyxl, no pandas).

Enough for the label spreadsheets some datasets publish (SICAPv2's partition files, BRACS.xlsx):
shared strings, inline strings and numbers; a sheet picked by name or the first one. Numbers
come back as their text ("1", "0.5"); formulas as their cached value.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
       "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
       "p": "http://schemas.openxmlformats.org/package/2006/relationships"}
_REF = re.compile(r"^([A-Z]+)(\d+)$")


class XlsxError(Exception):
    """The file is not a readable .xlsx workbook, or lacks the sheet asked for."""


def _column(ref: str) -> int:
    m = _REF.match(ref)
    letters = m.group(1) if m else "A"
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _text(node) -> str:
    return "".join(t.text or "" for t in node.iter(f"{{{_NS['m']}}}t"))


def _sheet_path(zf: zipfile.ZipFile, sheet: str | None) -> str:
    book = ET.fromstring(zf.read("xl/workbook.xml"))
    sheets = book.findall("m:sheets/m:sheet", _NS)
    if not sheets:
        raise XlsxError("the workbook lists no sheet")
    chosen = sheets[0] if sheet is None else next(
        (s for s in sheets if s.get("name") == sheet), None)
    if chosen is None:
        names = ", ".join(str(s.get("name")) for s in sheets)
        raise XlsxError(f"no sheet {sheet!r} (has {names})")
    rid = chosen.get(f"{{{_NS['r']}}}id")
    rels = ET.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    target = next((r.get("Target") for r in rels.findall("p:Relationship", _NS)
                   if r.get("Id") == rid), None)
    if not target:
        raise XlsxError(f"sheet {chosen.get('name')!r} has no part in the workbook")
    return target.lstrip("/") if target.startswith("/") else "xl/" + target


def read_rows(path: Path, sheet: str | None = None) -> list[list[str]]:
    """Every row of the sheet as a list of cell strings (missing cells are '')."""
    try:
        with zipfile.ZipFile(path) as zf:
            shared: list[str] = []
            if "xl/sharedStrings.xml" in zf.namelist():
                root = ET.fromstring(zf.read("xl/sharedStrings.xml"))
                shared = [_text(si) for si in root.findall("m:si", _NS)]
            data = ET.fromstring(zf.read(_sheet_path(zf, sheet)))
    except (zipfile.BadZipFile, KeyError, ET.ParseError) as err:
        raise XlsxError(f"{Path(path).name}: not a readable .xlsx ({err})") from None
    rows: list[list[str]] = []
    for row in data.iterfind("m:sheetData/m:row", _NS):
        cells: dict[int, str] = {}
        for i, c in enumerate(row.findall("m:c", _NS)):
            kind, value = c.get("t"), c.find("m:v", _NS)
            if kind == "inlineStr":
                text = _text(c)
            elif value is None:
                text = ""
            elif kind == "s":
                text = shared[int(value.text or 0)]
            else:
                text = value.text or ""
            cells[_column(c.get("r", "")) if c.get("r") else i] = text
        rows.append([cells.get(j, "") for j in range(max(cells, default=-1) + 1)])
    return rows


def read_records(path: Path, sheet: str | None = None) -> list[dict[str, str]]:
    """The sheet as dicts keyed by its first row (the header), blank rows skipped."""
    rows = read_rows(path, sheet)
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    return [dict(zip(header, r + [""] * (len(header) - len(r))))
            for r in rows[1:] if any(cell.strip() for cell in r)]
