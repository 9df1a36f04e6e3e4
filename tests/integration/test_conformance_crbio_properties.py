"""Property: any valid LabReport generates a CDA that passes the XSD and the CR-BIO schematrons."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from passerelle.mappings.document import Code
from passerelle.mappings.lab import Battery, LabResult, ReferenceRange, ResultStatus, ValueKind, generate
from passerelle.mappings.samples.lab import OBSERVED, sample_lab_report
from tests.support import conformance

pytestmark = pytest.mark.corpus

LOINC = "2.16.840.1.113883.6.1"
CODES = st.sampled_from([("2345-7", "Glucose"), ("2823-3", "Potassium"), ("718-7", "Hémoglobine"),
                         ("5195-3", "Antigène HBs"), ("8251-1", "Commentaire")])  # fmt: skip
UNITS = st.sampled_from(["g/L", "mmol/L", "umol/L", "10*9/L", "%", "[IU]/L", "mL/min/{1.73_m2}", "1"])
FLAGS = st.lists(st.sampled_from(["N", "H", "L", "HH", "LL", "A", "<", ">", "POS", "NEG"]), max_size=2, unique=True)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != ""
)
NUMBERS = st.decimals(min_value=Decimal("-1000"), max_value=Decimal("100000"), places=3, allow_nan=False)


@st.composite
def results(draw: st.DrawFn) -> LabResult:
    code, display = draw(CODES)
    kind = draw(st.sampled_from(list(ValueKind)))
    status = draw(
        st.sampled_from([ResultStatus.FINAL, ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.CANCELLED])
    )
    unit = draw(UNITS)
    low, high = sorted([draw(NUMBERS), draw(NUMBERS)])
    rng = draw(st.sampled_from([None, ReferenceRange(low=low, high=high, unit=unit), ReferenceRange(text="négatif & <"),
                                ReferenceRange(high=high, unit=unit)]))  # fmt: skip
    return LabResult(
        code=Code(code=code, system=LOINC, display=display),
        label=draw(st.one_of(st.just(""), TEXT)),
        kind=kind,
        number=draw(NUMBERS),
        unit=unit,
        comparator=draw(st.sampled_from(["<", "<=", ">", ">="])) if kind is ValueKind.INTERVAL else "",
        coded=Code(code="260385009", system="2.16.840.1.113883.6.96", display=draw(TEXT)),
        text=draw(TEXT),
        reference_range=rng,
        interpretation=tuple(draw(FLAGS)),
        status=status,
        observed=OBSERVED,
        comment=draw(st.one_of(st.just(""), TEXT)),
    )


@st.composite
def reports(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    base = sample_lab_report(corrected=draw(st.booleans()))
    extra = Battery(
        code=Code(code="18725-2", system=LOINC, display="Microbiologie"),
        chapter=Code(code="18725-2", system=LOINC, display="Microbiologie"),
        results=tuple(draw(st.lists(results(), min_size=1, max_size=6))),
        label=draw(st.one_of(st.just(""), TEXT)),
    )
    return base.model_copy(update={"batteries": (base.batteries[1], extra)})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(reports())
def test_any_report_passes_the_xsd(corpus_dir: Path, report) -> None:  # type: ignore[no-untyped-def]
    cda = generate(report).cda
    assert conformance.validate_xsd(cda) == []
    doc = etree.fromstring(cda)
    ids = doc.xpath("//@ID")
    assert len(ids) == len(set(ids))
    assert {r[1:] for r in doc.xpath("//*[local-name()='reference']/@value")} <= set(ids)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(reports())
def test_any_report_passes_the_schematrons(corpus_dir: Path, report) -> None:  # type: ignore[no-untyped-def]
    reports_ = conformance.run_schematrons(generate(report).cda, conformance.CRBIO_2024)
    assert conformance.failed_assertions(reports_) == []
