"""Safe XML parsing of untrusted CDA (docs/bad-input.md B-CDA; docs/interop-reference.md, "Safe XML")."""

from __future__ import annotations

import pytest

from passerelle.errors import EncodingError, ParseError, TooLargeError, ValidationError
from passerelle.mappings.cda.safe_xml import CdaLimits, parse_cda, parse_xml

CDA_NS = 'xmlns="urn:hl7-org:v3"'


def test_doctype_with_external_entity_is_refused() -> None:
    raw = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    with pytest.raises(ParseError) as err:
        parse_xml(raw)
    assert err.value.reason == "doctype"
    assert "passwd" not in err.value.message


def test_plain_doctype_and_parameter_entities_are_refused() -> None:
    for raw in (
        b"<!DOCTYPE ClinicalDocument><ClinicalDocument/>",
        b'<!doctype r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><r/>',
        b"<?xml version='1.0'?>\n<!-- c -->\n<!DOCTYPE r SYSTEM 'http://127.0.0.1:9/'><r/>",
    ):
        with pytest.raises(ParseError) as err:
            parse_xml(raw)
        assert err.value.reason == "doctype"


def test_billion_laughs_is_refused_before_expansion() -> None:
    ents = "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    raw = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "ha">{ents}]><r>&l9;</r>'.encode()
    with pytest.raises(ParseError) as err:
        parse_xml(raw)
    assert err.value.reason == "doctype"


def test_size_cap_is_checked_before_parsing() -> None:
    with pytest.raises(TooLargeError):
        parse_xml(b"<r>" + b"a" * 2000 + b"</r>", CdaLimits(max_bytes=1000))


def test_depth_cap() -> None:
    deep = b"<a>" * 300 + b"</a>" * 300
    with pytest.raises(ParseError) as err:
        parse_xml(deep)
    assert err.value.reason == "depth"
    very_deep = b"<a>" * 10_000 + b"</a>" * 10_000
    with pytest.raises(ParseError):
        parse_xml(very_deep)


def test_depth_cap_at_its_boundary() -> None:
    limits = CdaLimits(max_depth=5)
    assert parse_xml(b"<a>" * 5 + b"</a>" * 5, limits).tag == "a"  # 5 elements: counted, not walked
    with pytest.raises(ParseError) as err:
        parse_xml(b"<a>" * 6 + b"</a>" * 6, limits)
    assert err.value.reason == "depth"
    wide = b"<r>" + b"<e><f/></e>" * 20 + b"</r>"  # more elements than max_depth, only 3 deep
    assert len(parse_xml(wide, limits)) == 20


def test_element_count_cap_below_the_depth_cap() -> None:
    with pytest.raises(ParseError) as err:
        parse_xml(b"<r><e/><e/><e/></r>", CdaLimits(max_depth=200, max_elements=3))
    assert err.value.reason == "too_many_elements"


def test_element_count_cap() -> None:
    many = b"<r>" + b"<e/>" * 50 + b"</r>"
    with pytest.raises(ParseError) as err:
        parse_xml(many, CdaLimits(max_elements=10))
    assert err.value.reason == "too_many_elements"


def test_processing_instructions_are_dropped() -> None:
    raw = f'<?xml version="1.0"?><?xml-stylesheet type="text/xsl" href="http://127.0.0.1:9/x.xsl"?><ClinicalDocument {CDA_NS}><?evil x?><title>t</title></ClinicalDocument>'.encode()
    root = parse_cda(raw)
    assert not [n for n in root.iter() if not isinstance(n.tag, str)]
    assert root.getprevious() is None


def test_utf16_is_refused_with_encoding_reason() -> None:
    raw = '<?xml version="1.0" encoding="UTF-16"?><r/>'.encode("utf-16")
    with pytest.raises(EncodingError) as err:
        parse_xml(raw)
    assert err.value.reason == "unsupported_encoding"
    with pytest.raises(EncodingError):
        parse_xml('<?xml version="1.0"?><r/>'.encode("utf-16-be"))


def test_invalid_utf8_bytes_are_an_encoding_error() -> None:
    with pytest.raises(EncodingError) as err:
        parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><r>\xff\xfe\xfa</r>')
    assert err.value.reason == "encoding"


def test_utf8_bom_and_latin1_declaration_are_read() -> None:
    root = parse_xml(b"\xef\xbb\xbf<r>\xc3\xa9</r>")
    assert root.text == "é"
    root = parse_xml(b'<?xml version="1.0" encoding="ISO-8859-1"?><r>\xe9</r>')
    assert root.text == "é"


def test_not_well_formed_and_not_cda() -> None:
    with pytest.raises(ParseError) as err:
        parse_xml(b"<r><unclosed></r>")
    assert err.value.reason == "xml"
    with pytest.raises(ValidationError) as verr:
        parse_cda(b"<ClinicalDocument/>")
    assert verr.value.reason == "not_cda"
    with pytest.raises(ParseError):
        parse_xml(b"   ")


def test_xinclude_is_never_processed() -> None:
    raw = (
        f'<ClinicalDocument {CDA_NS} xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="file:///etc/passwd" parse="text"/></ClinicalDocument>'
    ).encode()
    root = parse_cda(raw)
    assert "root:" not in "".join(root.itertext())


def test_huge_text_node_and_many_attributes_are_bounded() -> None:
    # libxml2 without huge_tree refuses a text node over 10 MB even under our byte cap
    huge = b"<r>" + b"a" * (10 * 1024 * 1024 + 10) + b"</r>"
    with pytest.raises(ParseError):
        parse_xml(huge)
    # a million attributes are bounded by the byte cap before parsing
    attrs = b" ".join(b'a%d="1"' % i for i in range(1_000_000))
    with pytest.raises(TooLargeError):
        parse_xml(b"<r " + attrs + b"/>", CdaLimits(max_bytes=1024 * 1024))
