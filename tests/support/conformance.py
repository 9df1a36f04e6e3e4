"""Conformance harness shared by every test that checks an output against a published artefact.

- :func:`validate_xsd`: a CDA R2 document against the ANS extended CDA schema (lxml).
- :func:`run_schematron` / :func:`run_schematrons`: the ANS CI-SIS schematron kit (ISO Schematron, XSLT 2
  queries) compiled with lxml's ISO Schematron XSLT1 skeleton and run under saxonche.
- :func:`validate_fhir_bundle`: an ITI-65 bundle (or any R4 resource) with ``fhir.resources.R4B``.
- :func:`dciodvfy_errors`: the ``Error -`` lines of dicom3tools' ``dciodvfy``.

Each function calls ``pytest.skip`` with a clear message when the corpus, the kit or the tool is absent.
The corpus path comes from ``PASSERELLE_CORPUS`` or ``../shared/corpus`` beside the project.

How the schematron pipeline works (see docs/conformance.md and docs/adr/0004-schematron-pipeline.md):

1. The kit is copied once into a cache directory (keyed by the kit path and the mtimes/sizes of its
   files), never modified in place. The copy gets the fixes the kit needs on a case-sensitive file system
   (aliases for includes whose letter case differs from the file on disk, ``%20`` for an include path
   with a space) and the value set file the structuration minimale schematron needs but the kit lacks
   (``voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml``, generated from the kit's own ``JDV_J07`` SVS file).
2. Each entry schematron is compiled (include, abstract expansion, SVRL compile with
   ``queryBinding="xslt"``) by lxml, the generated stylesheet's version is set to 2.0 and it is written
   beside its ``.sch`` in the cache (so the kit's relative ``../jeuxDeValeurs/`` paths resolve).
3. saxonche compiles and runs it with the loop-lifting optimisation off (``optimizationLevel -l``):
   with it on, Saxon fails on the generated stylesheets with "Bad parent pointer in expression tree".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

ROOT = Path(__file__).resolve().parents[2]

XSD_RELATIVE = Path("schemas/cda-r2-ans-extended/cda/CDA_extended.xsd")
KIT_RELATIVE = Path("schematrons/ans-ci-sis")

#: Bump when the way the cache copy or the compiled stylesheets are produced changes.
PIPELINE_VERSION = "2"

SVRL_NS = "http://purl.oclc.org/dsdl/svrl"
_SVRL = {"svrl": SVRL_NS}

#: Short names accepted by :func:`run_schematron`, relative to the kit's ``schematrons/`` folder.
VOLET_ALIASES: dict[str, str] = {
    "IHE": "profils/IHE.sch",
    "CI-SIS_ModelesDeContenusCDA": "profils/CI-SIS_ModelesDeContenusCDA.sch",
    "CI-SIS_Modeles_ANS": "profils/CI-SIS_Modeles_ANS.sch",
    "structurationMinimale": "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
    "ASIP-STRUCT-MIN-StrucMin": "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
}

#: What the ANS validator runs for a CDA of a given volet: the header (structuration minimale), the IHE
#: and CI-SIS content-module profiles, then the volet's own schematron.
PROFILE_SCHEMATRONS = ("structurationMinimale", "IHE", "CI-SIS_ModelesDeContenusCDA")
CRBIO_2024 = "CI-SIS_BIO-CR-BIO_2024.01"
IMG_CR_IMG_2024 = "CI-SIS_IMG-CR-IMG_2024.01"


# --- locations ---------------------------------------------------------------------------------------


def corpus_path() -> Path:
    return Path(os.environ.get("PASSERELLE_CORPUS", ROOT.parent / "shared" / "corpus"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set PASSERELLE_CORPUS to the shared corpus)")
    return path


def kit_path() -> Path:
    return _require(corpus_path() / KIT_RELATIVE, "ANS schematron kit")


def cache_root() -> Path:
    env = os.environ.get("PASSERELLE_SCHEMATRON_CACHE")
    return Path(env) if env else ROOT / ".pytest_cache" / "passerelle-schematron"


# --- XSD ---------------------------------------------------------------------------------------------


_SAFE_PARSER_ARGS: dict[str, Any] = {"resolve_entities": False, "no_network": True, "huge_tree": True}


@cache
def _cda_schema(xsd: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(xsd)))


def validate_xsd(xml_bytes: bytes) -> list[str]:
    """Errors of ``xml_bytes`` against the ANS extended CDA R2 schema (empty list when valid)."""
    xsd = _require(corpus_path() / XSD_RELATIVE, "ANS extended CDA schema")
    schema = _cda_schema(xsd)
    try:
        doc = etree.fromstring(xml_bytes, etree.XMLParser(**_SAFE_PARSER_ARGS))
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed: {exc}"]
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


# --- schematron: report model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Assertion:
    """One failed assertion (or successful report) of an SVRL output."""

    text: str
    location: str
    test: str
    role: str = ""
    id: str = ""

    def __str__(self) -> str:
        role = f"[{self.role}] " if self.role else ""
        return f"{role}{self.text} @ {self.location} (test: {self.test})"


@dataclass
class SchematronReport:
    volet: str
    failed: list[Assertion] = field(default_factory=list)
    reports: list[Assertion] = field(default_factory=list)
    fired_rules: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No failed assertion at all (whatever its role)."""
        return not self.failed

    @property
    def errors(self) -> list[Assertion]:
        """Failed assertions whose role is not an explicit warning or information."""
        return [a for a in self.failed if a.role.lower() not in {"warning", "warn", "info", "information"}]

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.volet}: {len(self.failed)} failed assertion(s), {self.fired_rules} rules fired"]
        lines += [f"  - {a}" for a in self.failed[:limit]]
        if len(self.failed) > limit:
            lines.append(f"  ... {len(self.failed) - limit} more")
        return "\n".join(lines)


def parse_svrl(svrl: bytes, volet: str) -> SchematronReport:
    root = etree.fromstring(svrl, etree.XMLParser(**_SAFE_PARSER_ARGS))

    def read(el: etree._Element) -> Assertion:
        text = " ".join("".join(el.xpath("svrl:text//text()", namespaces=_SVRL)).split())
        return Assertion(
            text=text,
            location=el.get("location", ""),
            test=el.get("test", ""),
            role=el.get("role", ""),
            id=el.get("id", ""),
        )

    return SchematronReport(
        volet=volet,
        failed=[read(e) for e in root.iterfind("svrl:failed-assert", _SVRL)],
        reports=[read(e) for e in root.iterfind("svrl:successful-report", _SVRL)],
        fired_rules=len(root.findall("svrl:fired-rule", _SVRL)),
    )


# --- schematron: cache copy of the kit ---------------------------------------------------------------


_INCLUDE_RE = re.compile(r'(<include\s+href=")([^"]+)(")')
_MISSING_VOC = "profils/structurationMinimale/include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml"
_VOC_SOURCE = "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml"
_lock = threading.Lock()


def _kit_key(kit: Path) -> str:
    digest = hashlib.sha256(f"{PIPELINE_VERSION}|{etree.LXML_VERSION}|{kit.resolve()}".encode())
    for path in sorted(kit.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(kit)}|{st.st_mtime_ns}|{st.st_size}\n".encode())
    return digest.hexdigest()[:16]


def _fix_kit_copy(copy: Path) -> list[str]:
    """Apply the documented fixes to the cache copy; returns what was done (written to FIXES.json)."""
    done: list[str] = []
    for sch in sorted(copy.rglob("*.sch")):
        text = sch.read_text(encoding="utf-8")
        new_text = text
        for href in {m.group(2) for m in _INCLUDE_RE.finditer(text)}:
            if " " in href:
                new_text = new_text.replace(f'href="{href}"', f'href="{href.replace(" ", "%20")}"')
                done.append(f"{sch.relative_to(copy)}: include '{href}' written with %20")
                continue
            target = sch.parent / href
            if target.exists() or not target.parent.is_dir():
                continue
            same = [p for p in target.parent.iterdir() if p.name.lower() == target.name.lower()]
            if same:
                shutil.copyfile(same[0], target)
                done.append(f"{sch.relative_to(copy)}: alias {target.name} -> {same[0].name}")
        if new_text != text:
            sch.write_text(new_text, encoding="utf-8")
    voc = copy / "schematrons" / _MISSING_VOC
    source = copy / _VOC_SOURCE
    if not voc.exists() and source.exists():
        voc.write_bytes(_svs_to_decor_voc(source.read_bytes()))
        done.append(f"{_MISSING_VOC}: generated from {_VOC_SOURCE}")
    return done


def _svs_to_decor_voc(svs: bytes) -> bytes:
    """ART-DECOR ``voc-*.xml`` shape (``/valueSets/valueSet/conceptList/concept/@code``) from an SVS file."""
    src = etree.fromstring(svs, etree.XMLParser(**_SAFE_PARSER_ARGS))
    ns = {"svs": "urn:ihe:iti:svs:2008"}
    value_set = src.find("svs:ValueSet", ns)
    assert value_set is not None, "SVS file without ValueSet"
    # The schematron reads /*/valueSet/conceptList/concept/@code: valueSet and below in no namespace.
    out = etree.Element("valueSets")
    vs = etree.SubElement(out, "valueSet", id=value_set.get("id", ""), name=value_set.get("displayName", ""))
    concepts = etree.SubElement(vs, "conceptList")
    for c in value_set.iterfind("svs:ConceptList/svs:Concept", ns):
        etree.SubElement(
            concepts,
            "concept",
            code=c.get("code", ""),
            codeSystem=c.get("codeSystem", ""),
            displayName=c.get("displayName", ""),
        )
    return bytes(etree.tostring(out, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def prepared_kit() -> Path:
    """The fixed copy of the kit in the cache (made once per kit content), holding ``schematrons/``."""
    return _prepare(kit_path(), cache_root())


@cache
def _prepare(kit: Path, root: Path) -> Path:
    target = root / _kit_key(kit)
    with _lock:
        if (target / "READY").exists():
            return target
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="kit-", dir=root))
        shutil.copytree(kit, tmp, dirs_exist_ok=True)
        fixes = _fix_kit_copy(tmp)
        (tmp / "FIXES.json").write_text(json.dumps(fixes, indent=1), encoding="utf-8")
        (tmp / "READY").write_text(str(kit), encoding="utf-8")
        try:
            tmp.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def kit_fixes() -> list[str]:
    """What the cache copy changed compared with the kit (for the docs and for debugging)."""
    fixes: list[str] = json.loads((prepared_kit() / "FIXES.json").read_text(encoding="utf-8"))
    return fixes


# --- schematron: compile and run ---------------------------------------------------------------------


def schematron_path(volet: str) -> Path:
    """Entry ``.sch`` of ``volet`` in the cache copy (volet name, alias or path under ``schematrons/``)."""
    relative = VOLET_ALIASES.get(volet, volet)
    if not relative.endswith(".sch"):
        relative += ".sch"
    path = prepared_kit() / "schematrons" / relative
    if not path.is_file():
        raise FileNotFoundError(f"no schematron {relative!r} in the kit (volet {volet!r})")
    return path


def _xslt1_skeleton() -> Path:
    import lxml.isoschematron as iso

    path = Path(iso.__file__).parent / "resources" / "xsl" / "iso-schematron-xslt1"
    if not (path / "iso_svrl_for_xslt1.xsl").is_file():
        pytest.skip(f"lxml's ISO Schematron skeleton not found at {path}")
    return path


@cache
def _skeleton_steps() -> tuple[etree.XSLT, etree.XSLT, etree.XSLT]:
    base = _xslt1_skeleton()
    return (
        etree.XSLT(etree.parse(str(base / "iso_dsdl_include.xsl"))),
        etree.XSLT(etree.parse(str(base / "iso_abstract_expand.xsl"))),
        etree.XSLT(etree.parse(str(base / "iso_svrl_for_xslt1.xsl"))),
    )


def compiled_stylesheet(volet: str) -> Path:
    """The SVRL-producing XSLT 2.0 stylesheet for ``volet``, compiled once and kept beside its ``.sch``."""
    sch = schematron_path(volet)
    out = sch.with_name(sch.stem + ".svrl.xsl")
    if out.exists():
        return out
    include, expand, compile_ = _skeleton_steps()
    doc = etree.parse(str(sch))
    doc.getroot().set("queryBinding", "xslt")  # the XSLT1 skeleton refuses xslt2; Saxon runs XPath 2 anyway
    compiled = compile_(expand(include(doc)))
    root = compiled.getroot()
    if root is None:
        raise RuntimeError(f"schematron compile of {volet} produced nothing: {compile_.error_log}")
    root.set("version", "2.0")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    compiled.write(str(tmp), xml_declaration=True, encoding="UTF-8")
    os.replace(tmp, out)
    return out


_SAXON_OPTIMIZATION = "http://saxon.sf.net/feature/optimizationLevel"


class _Saxon:
    """One Saxon processor per test process; compiled executables kept by stylesheet path."""

    def __init__(self) -> None:
        try:
            from saxonche import PySaxonProcessor
        except ImportError:  # pragma: no cover - depends on the environment
            pytest.skip("saxonche is not installed (dev extra)")
        self.proc = PySaxonProcessor(license=False)
        # Loop-lifting ("l") breaks the generated stylesheets: "Bad parent pointer in expression tree".
        self.proc.set_configuration_property(_SAXON_OPTIMIZATION, "-l")
        self.xslt = self.proc.new_xslt30_processor()
        self.executables: dict[Path, Any] = {}

    def run(self, stylesheet: Path, xml_bytes: bytes) -> bytes:
        executable = self.executables.get(stylesheet)
        if executable is None:
            executable = self.xslt.compile_stylesheet(stylesheet_file=str(stylesheet))
            self.executables[stylesheet] = executable
        # A file source keeps document-uri() and error locations meaningful and avoids encoding surprises.
        with tempfile.NamedTemporaryFile(suffix=".xml", delete=False) as handle:
            handle.write(xml_bytes)
            source = handle.name
        try:
            result = executable.transform_to_string(source_file=source)
        finally:
            os.unlink(source)
        if result is None:
            raise RuntimeError(f"saxon produced no SVRL for {stylesheet.name}")
        return str(result).encode("utf-8")


@cache
def _saxon() -> _Saxon:
    return _Saxon()


def run_schematron(xml_bytes: bytes, volet: str) -> SchematronReport:
    """Run one schematron of the ANS kit on ``xml_bytes`` and return its failed assertions.

    ``volet`` is an entry point name such as ``CI-SIS_BIO-CR-BIO_2024.01`` or ``CI-SIS_IMG-CR-IMG_2024.01``,
    a profile alias (``structurationMinimale``, ``IHE``, ``CI-SIS_ModelesDeContenusCDA``,
    ``CI-SIS_Modeles_ANS``) or a path under the kit's ``schematrons/`` folder.
    """

    started = time.perf_counter()
    stylesheet = compiled_stylesheet(volet)
    with _lock:
        svrl = _saxon().run(stylesheet, xml_bytes)
    report = parse_svrl(svrl, volet)
    report.seconds = time.perf_counter() - started
    return report


def run_schematrons(xml_bytes: bytes, volet: str, *, profiles: bool = True) -> list[SchematronReport]:
    """The volet's schematron, preceded (by default) by the header and profile schematrons."""
    names = [*PROFILE_SCHEMATRONS, volet] if profiles else [volet]
    return [run_schematron(xml_bytes, name) for name in names]


def failed_assertions(reports: list[SchematronReport]) -> list[str]:
    """Flat, readable list of every failed assertion of ``reports`` (for ``assert not ...``)."""
    return [f"{r.volet}: {a}" for r in reports for a in r.failed]


def assert_cda_conformant(xml_bytes: bytes, volet: str, *, extra: tuple[str, ...] = ()) -> list[SchematronReport]:
    """Assert ``xml_bytes`` passes the XSD and the header, profile and volet schematrons (plus ``extra``)
    with zero failed assertions (warnings included) and that every schematron's rules fired."""
    xsd_errors = validate_xsd(xml_bytes)
    assert not xsd_errors, "XSD errors:\n" + "\n".join(xsd_errors[:20])
    reports = run_schematrons(xml_bytes, volet) + [run_schematron(xml_bytes, name) for name in extra]
    failed = failed_assertions(reports)
    assert not failed, f"{len(failed)} failed assertion(s):\n" + "\n".join(failed[:30])
    silent = [r.volet for r in reports if r.fired_rules == 0]
    assert not silent, f"no rule fired in {silent}: wrong document or namespace?"
    return reports


# --- FHIR --------------------------------------------------------------------------------------------


def validate_fhir_bundle(bundle: dict[str, Any]) -> list[str]:
    """Structural errors of an R4 resource (normally an ITI-65 Bundle, entries included); empty when valid."""
    try:
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.skip("fhir.resources is not installed")
    from pydantic import ValidationError

    errors: list[str] = []

    def check(resource: Any, where: str) -> None:
        if not isinstance(resource, dict) or "resourceType" not in resource:
            errors.append(f"{where}: not a FHIR resource (no resourceType)")
            return
        try:
            model = get_fhir_model_class(resource["resourceType"])
        except (KeyError, ValueError):
            errors.append(f"{where}: unknown resourceType {resource['resourceType']!r}")
            return
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            errors.extend(f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())

    # The Bundle model validates each entry's resource with the model of its resourceType.
    check(bundle, bundle.get("resourceType", "resource") if isinstance(bundle, dict) else "resource")
    return errors


# --- DICOM -------------------------------------------------------------------------------------------


def dciodvfy_errors(path: Path | str) -> list[str]:
    """``Error -`` lines printed by ``dciodvfy`` for a DICOM file (empty when it finds none).

    dciodvfy returns 1 on errors; a crash (signal) is reported as one error line. Warnings are ignored.
    """
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line.strip() for line in lines if line.lstrip().startswith("Error")]
    if proc.returncode < 0 or proc.returncode > 1:
        errors.append(f"dciodvfy exited with {proc.returncode}")
    return errors
