# docs/conformance.md names real tests: every `covered:` row's test file exists
# and defines the named test function (tools/conformance.py).
import os

from tools import conformance


def test_conformance_doc_exists():
    assert os.path.isfile(conformance.DOC), "docs/conformance.md is missing"


def test_every_covered_row_names_an_existing_test(capsys):
    assert conformance.main([conformance.DOC]) == 0, capsys.readouterr().out


def test_checker_catches_a_bad_row(tmp_path):
    doc = tmp_path / "c.md"
    doc.write_text(
        "## MQTT 3.1.1\n\n| Statement | Requires | Status |\n|---|---|---|\n"
        "| MQTT-3.1.0-1 | first packet | covered: tests/integration/test_05_bad_input.py::test_first_packet_not_connect[http] |\n"
        "| MQTT-3.1.0-2 | second CONNECT | covered: tests/core/test_broker.py::test_no_such_test |\n"
        "| MQTT-3.1.2-1 | name | maybe |\n"
        "\n## MQTT 5.0\n\n| Statement | Requires | Status |\n|---|---|---|\n"
        "| MQTT-3.1.0-1 | first packet | open: later |\n")
    counts, problems = conformance.check(doc.read_text())
    assert counts["MQTT 3.1.1"]["covered"] == 2 and counts["MQTT 5.0"]["open"] == 1
    assert len(problems) == 2, problems
    assert "test_no_such_test" in problems[0] and "maybe" in problems[1]
    assert conformance.main([str(doc)]) == 1
    assert conformance.main([str(tmp_path / "missing.md")]) == 1
