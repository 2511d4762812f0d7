from pathlib import Path

import altair as alt
import nbformat
import pandas as pd
import pytest

from robustlib import report, runner

FIXTURE = Path(__file__).parent / "notebooks" / "fixture.ipynb"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUSTLIB_REPORTS", str(tmp_path / "reports"))


def test_study_report_is_self_contained(tmp_path):
    runner.run_notebook(FIXTURE, {"label": "marker-label-42"}, study="rep", progress=False)
    path = report.export_study("rep")
    assert path == tmp_path / "reports" / "rep" / "report.html"
    page = path.read_text()
    assert "Fixture notebook" in page and "marker-label-42" in page  # markdown and outputs
    assert "run_dir" not in page and "log_metrics" not in page  # no code
    assert "data:image/svg+xml" in page or "<svg" in page  # the chart, inline
    assert report.external_references(page) == []
    assert "<script" not in page


def test_vegalite_outputs_become_svg():
    chart = alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_point().encode(x="x")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("c")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.vegalite.v5+json": chart.to_dict(), "text/html": "<script src='https://cdn/x.js'></script>"})]
    static = report.static_charts(nb)
    (out,) = static.cells[0].outputs
    assert list(out["data"]) == ["image/svg+xml"] and out["data"]["image/svg+xml"].lstrip().startswith("<svg")
    assert "application/vnd.vegalite.v5+json" in nb.cells[0].outputs[0]["data"]  # original untouched


def test_external_references_detected():
    assert report.external_references('<script src="https://x/y.js"></script><img src="data:x">') == [
        "https://x/y.js"]


def test_missing_study_and_chart_suffix(tmp_path):
    with pytest.raises(LookupError, match="no completed"):
        report.export_study("nothing")
    chart = alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x")
    with pytest.raises(ValueError, match="accepted suffixes"):
        report.export_chart(chart, tmp_path / "c.pdf")
    assert report.export_chart(chart, tmp_path / "c.svg").read_text().lstrip().startswith("<svg")
    html = report.export_chart(chart, tmp_path / "c.html").read_text()
    assert report.external_references(html) == []
