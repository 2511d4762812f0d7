from pathlib import Path

import altair as alt
import nbformat
import pandas as pd
import pytest

from robustlib import report, runner

FIXTURE = Path(__file__).parent / "notebooks" / "fixture.ipynb"


def socket_name():
    import socket

    return socket.gethostname()


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
    assert str(tmp_path) not in page and socket_name() not in page  # no absolute paths, no host name


def test_vegalite_outputs_become_svg():
    chart = alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_point().encode(x="x")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("c")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.vegalite.v5+json": chart.to_dict(), "text/html": "<script src='https://cdn/x.js'></script>"})]
    static = report.static_charts(nb)
    (out,) = static.cells[0].outputs
    assert list(out["data"]) == ["text/html"]
    img = out["data"]["text/html"]
    assert img.startswith('<img src="data:image/svg+xml;base64,') and 'alt="Chart: untitled (x axis: x)"' in img
    import base64

    svg = base64.b64decode(img.split("base64,")[1].split('"')[0]).decode()
    assert svg.lstrip().startswith("<svg")
    assert "application/vnd.vegalite.v5+json" in nb.cells[0].outputs[0]["data"]  # original untouched


def test_alt_text_says_what_a_chart_shows():
    from robustlib import plots

    tidy = pd.DataFrame({"model": ["a", "a"], "num_params": [1, 1], "seed": [0, 0], "iteration": [0, 1],
                         "asr": [0.0, 0.5], "n_attacked": [4, 4], "attack_flops": [0.0, 10.0]})
    alt_text = plots.describe(plots.asr_curves(tidy, title="GCG on spam").to_dict())
    assert alt_text.startswith("Chart: GCG on spam (") and "x axis: attack iterations" in alt_text
    assert "y axis: logit10(ASR)" in alt_text and "one colour per: model" in alt_text


def test_shareable_drops_widgets_warnings_and_progress():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("c")])
    nb.metadata["widgets"] = {"state": "x" * 1000}
    nb.cells[0].outputs = [
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "1"},
                                                     "text/plain": "models: 0%|"}),
        nbformat.v4.new_output("stream", name="stderr", text=(
            "/home/u/.venv/lib/site.py:361: FutureWarning: `x` is deprecated\n  outputs = func(x)\n"
            "fine-tune:  50%|#####     | 2/4 [00:01<00:01, 1.9it/s]\r\n"
            "robustlib.tasks: dropped 2 rows\n")),
        nbformat.v4.new_output("stream", name="stderr", text="/a.py:1: UserWarning: hm\n"),
        nbformat.v4.new_output("stream", name="stdout", text="kept\n"),
    ]
    clean = report.shareable(nb)
    outs = clean.cells[0].outputs
    assert [o["output_type"] for o in outs] == ["stream", "stream"] and "widgets" not in clean.metadata
    assert outs[0]["text"] == "robustlib.tasks: dropped 2 rows\n" and outs[1]["text"] == "kept\n"


def test_tables_lose_the_row_numbers_and_show_compute_readably():
    html = pd.DataFrame({"model": ["a", "b"], "flops": [19102864111488, 2.5e-5], "n": [156608, 3]}).to_html(
        classes="dataframe")
    out = report.tidy_tables(html)
    assert ">0<" not in out.replace(">0.", "") and "1.91e13" in out and "2.5e-5" in out and "156608" in out
    indexed = pd.DataFrame({"v": [1]}, index=["x"]).to_html()
    assert ">x<" in report.tidy_tables(indexed)  # a meaningful index stays
    filtered = pd.DataFrame({"asr": [0.909091, 1.0], "k": ["a", "b"]}, index=[10, 21]).to_html()
    out = report.tidy_tables(filtered)
    assert ">10<" not in out and ">21<" not in out and ">0.909<" in out  # row positions of a filtered frame go
    named = pd.DataFrame({"v": [1, 2]}, index=pd.Index([3, 4], name="round")).to_html()
    assert ">3<" in report.tidy_tables(named)  # a named index is data


def test_paths_in_a_report_are_relative(tmp_path, monkeypatch):
    from robustlib import paths

    text = f"recording into {paths.runs_dir()}/s/r and {paths.PACKAGE_DIR} and {Path.home()}/x"
    out = report.relative_paths(text)
    assert str(paths.runs_dir()) not in out and "runs/s/r" in out and "~/x" in out


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


def test_the_report_opens_with_the_findings_in_words(tmp_path):
    run = runner.run_notebook(FIXTURE, {}, study="rep", progress=False)
    run._set_status(notebook="01_finetune")  # as if it were a fine-tuning run with its metrics
    run.log_metrics(models=8, val_accuracy_median_largest=0.9575, train_flops_paper_total=115720964849664)
    page = report.export_study("rep").read_text()
    findings = page[page.index("<h2>Findings</h2>"):page.index("</ul>")]
    assert "fine-tuned 8 models" in findings and "0.96" in findings and "1.16e14" in findings
    assert page.index("Findings") < page.index('<section class="notebook"')


@pytest.mark.parametrize("notebook,metrics,says", [
    ("02_attack", {"attack": "gcg", "iterations": 10, "asr_median_smallest": 0.96, "asr_median_largest": 0.84},
     ["gcg with 10 iterations", "96%", "84%"]),
    ("03_adversarial_training", {"defended_models": 4, "asr_before_largest": 0.84, "asr_after_largest": 0.17,
                                 "worst_after_over_before": 0.2, "defense_flops_paper_total": 5e14},
     ["4 models", "84% to 17%", "at most 20%", "5e14"]),
    ("04_offense_defense", {"offense_defense_pooled_slopes": {"0.1 FLOPs": 1.25, "0.25 FLOPs": 0.5,
                                                              "0.1 fraction of pretraining": 1.2}},
     ["10% ASR: 1.25", "25% ASR: 0.50"]),
    ("04_offense_defense", {"offense_defense_pooled_slopes": {}}, ["no offense/defense fit"]),
    ("05_paper_results", {"sources": 18, "offense_defense_pooled_slopes": {"pythia pm @ 0.05": 0.66}},
     ["18 released tables", "0.66"]),
    ("fixture", {"value": 1}, []),
    ("02_attack", {"an": "old version"}, []),
])
def test_each_study_says_what_it_found(notebook, metrics, says):
    from robustlib import studies

    said = studies.summarize(notebook, metrics)
    assert all(s in said for s in says), said
    assert bool(said) == bool(says)
