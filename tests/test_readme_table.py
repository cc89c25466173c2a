"""README.md's results table is what ``python -m medsemiseg.benchmark.readme_table`` makes of the real-data grids'
``results.md`` (docs/results.md): it cannot drift from the grids, and a method a grid gains appears on rerunning."""

from __future__ import annotations

from pathlib import Path

from medsemiseg.benchmark.readme_table import BEGIN, END, main, readme_block, render

REPO = Path(__file__).resolve().parents[1]


def _results_md(methods: dict[str, tuple[str, str]], full: str = "80.00 ± 0.10") -> str:
    """A grid's results.md with the two tables the script reads (per-image mIoU, paired to supervised)."""
    miou = ["### t: IoU per class and mIoU (%), per-image IoU averaged over test images; mean ± sample std", "",
            "| Labelled | Method | vessel IoU | mIoU | n |", "|---|---|---:|---:|---:|"]
    miou += [f"| 1/8 | {m} | 1.00 ± 0.00 | {v} | 3 |" for m, (v, _) in methods.items()]
    miou += [f"| full | supervised | 1.00 ± 0.00 | **{full}** | 3 |", ""]
    paired = ["### t: paired difference to supervised (same fraction and seed = same labelled images), points", "",
              "| Labelled | Method | seed 0 | mIoU diff | share of label gap |", "|---|---|---:|---:|---:|"]
    paired += [f"| 1/8 | {m} | +0.1 | {d} | +1 % |" for m, (_, d) in methods.items() if m != "supervised"]
    pooled = ["", "### t: IoU per class and mIoU (%), pooled IoU; mean ± sample std", "",
              "| Labelled | Method | vessel IoU | mIoU | n |", "|---|---|---:|---:|---:|",
              "| 1/8 | supervised | 1.00 ± 0.00 | 99.99 ± 0.00 | 3 |"]
    return "\n".join(miou + paired + pooled) + "\n"


def _grids(tmp_path: Path, drive: dict, covid: dict) -> Path:
    for rel, methods in (("docs/results/real/drive/results.md", drive),
                         ("docs/results/real/covidsemiseg/results.md", covid)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(_results_md(methods))
    return tmp_path


def test_readme_results_table_is_what_the_script_makes_of_the_grids():
    readme = (REPO / "README.md").read_text()
    assert readme_block(readme) == render(REPO), (
        "README.md's results table differs from docs/results/real/*/results.md; rewrite it with "
        "python -m medsemiseg.benchmark.readme_table --write")


def test_every_method_of_either_grid_gets_a_row_and_a_missing_cell_shows_a_dash(tmp_path):
    root = _grids(tmp_path,
                  drive={"supervised": ("70.00 ± 1.00", ""),
                         "supmix_sufd": ("**74.00 ± 1.00**", "+4.00 [+1.00, +7.00] *"),
                         "newmethod": ("75.00 ± 2.00", "+5.00 [-1.00, +11.00]")},
                  covid={"supervised": ("30.00 ± 1.00", ""), "supmix_sufd": ("29.00 ± 3.00", "-1.00 [-5.00, +3.00]")})
    lines = render(root).splitlines()
    assert lines[0].startswith("| Method | DRIVE mIoU | DRIVE Δ vs supervised")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert list(rows) == ["supervised", "supmix_sufd", "newmethod", "supervised, all labels"]
    assert rows["supmix_sufd"] == ("| supmix_sufd | 74.00 ± 1.00 | +4.00 [+1.00, +7.00] * | 29.00 ± 3.00 "
                                   "| -1.00 [-5.00, +3.00] |")
    assert rows["newmethod"] == "| newmethod | 75.00 ± 2.00 | +5.00 [-1.00, +11.00] | – | – |"
    assert rows["supervised"] == "| supervised | 70.00 ± 1.00 | – | 30.00 ± 1.00 | – |"
    assert rows["supervised, all labels"] == "| supervised, all labels | 80.00 ± 0.10 | – | 80.00 ± 0.10 | – |"


def test_check_fails_on_a_stale_readme_and_write_mends_it(tmp_path, capsys):
    root = _grids(tmp_path, drive={"supervised": ("70.00 ± 1.00", ""), "fixmatch": ("72.00 ± 1.00", "+2.00 [0, 4]")},
                  covid={"supervised": ("30.00 ± 1.00", "")})
    readme = root / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\n| an old table |\n{END}\n\nmore text\n")
    assert main(["--root", str(root), "--check"]) == 1
    assert "readme_table --write" in capsys.readouterr().err
    assert main(["--root", str(root), "--write"]) == 0
    assert main(["--root", str(root), "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n" + BEGIN + "\n| Method |") and text.endswith(END + "\n\nmore text\n")
    assert "| fixmatch | 72.00 ± 1.00 | +2.00 [0, 4] | – | – |" in text


def test_a_missing_grid_or_marker_names_the_file_and_the_fix(tmp_path, capsys):
    assert main(["--root", str(tmp_path)]) == 2
    assert "drive/results.md: no such results.md" in capsys.readouterr().err
    root = _grids(tmp_path, drive={"supervised": ("70.00 ± 1.00", "")}, covid={"supervised": ("30.00 ± 1.00", "")})
    (root / "README.md").write_text("# no markers\n")
    assert main(["--root", str(root), "--check"]) == 2
    assert "add the two markers" in capsys.readouterr().err
