"""The search's figures: score against generation, and the found factors against the seeds'."""

from ropescale.report.plots import search_factors_figure, search_score_figure

PNG = b"\x89PNG"


def test_score_figure_is_drawn_from_history_rows(tmp_path):
    rows = [{"generation": g, "best": 2.0 - 0.1 * g, "median": 2.5 - 0.1 * g} for g in range(3)]
    assert search_score_figure(rows, "needle", tmp_path / "score.png").read_bytes().startswith(PNG)
    assert search_score_figure([], "needle", tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_factors_figure_draws_the_searched_factors_against_yarn(tmp_path):
    path = search_factors_figure([1.0, 2.0, 8.0], {"yarn": [1.0, 1.5, 8.0], "linear": [8.0] * 3},
                                 tmp_path / "factors.png", {"yarn": 1.2, "searched": 1.4})
    assert path.read_bytes().startswith(PNG)
    assert search_factors_figure([], {}, tmp_path / "none.png") is None
