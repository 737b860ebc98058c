"""workflow/scripts/figures.py: where a figure's provenance footer goes."""

import pytest
from helpers import REPO

SCRIPTS = REPO / "workflow" / "scripts"


@pytest.fixture
def figures(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import figures

    return figures


def one_axis(plt):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], label="a")
    ax.plot([0, 1], [1, 0], label="b")
    return fig, ax


def test_lowest_legend_is_zero_without_a_legend_below_the_figure(figures):
    plt = figures.plt
    fig, ax = one_axis(plt)
    assert figures._lowest_legend(fig) == 0.0  # no legend
    ax.legend(loc="upper right")
    assert figures._lowest_legend(fig) == 0.0  # inside the axis
    plt.close(fig)


def test_lowest_legend_is_the_bottom_edge_of_a_legend_placed_below_the_axis(figures):
    plt = figures.plt
    fig, ax = one_axis(plt)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1)
    fig.legend(["figure-level"], loc="upper left", bbox_to_anchor=(0.0, -0.6))  # a figure legend, lower still
    edge = fig.legends[0].get_window_extent(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted()).y0
    assert edge < -0.6
    assert figures._lowest_legend(fig) == pytest.approx(edge)
    plt.close(fig)


def test_footer_is_written_below_every_legend(figures, tmp_path):
    plt = figures.plt
    fig, ax = one_axis(plt)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2))
    legend_bottom = figures._lowest_legend(fig)
    footer = "provenance footer"
    texts = []
    real_close = plt.close
    figures.plt.close = lambda f: texts.extend(t for t in f.texts if t.get_text() == footer)
    try:
        figures.save(fig, tmp_path, "f", footer)
    finally:
        figures.plt.close = real_close
    real_close(fig)
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "f.pdf").stat().st_size > 0
    (text,) = texts
    assert text.get_position()[1] < legend_bottom < 0 and text.get_va() == "top"


def test_comparisons_figure_shows_each_difference_with_three_or_more_pairs(figures, tmp_path):
    import pandas as pd

    def row(experiment, versus, pairs, pers, holds, holds_holm):
        r = {"experiment": experiment, "archset": "hetero-vgg", "alpha": "a0.5", "d": 64, "fusion": "add",
             "versus": versus, "pairs": pairs}  # fmt: skip
        for col, m in (("pers_acc", pers), ("global_acc", -25.0)):
            r.update({f"final_{col}_diff_pts": m, f"final_{col}_ci_low": m - 1, f"final_{col}_ci_high": m + 1,
                      f"final_{col}_holds": holds, f"final_{col}_holds_holm": holds_holm})  # fmt: skip
        return r

    comparisons = pd.DataFrame(
        [row("heterogeneous", "local", 3, 0.1, False, False), row("homogeneous", "fedavg", 3, 6.0, True, True),
         row("noniid", "local", 2, 0.4, True, False)]  # fmt: skip
    )
    shown = figures.comparisons_figure(comparisons, tmp_path, "footer")
    assert shown == ["heterogeneous: hetero-vgg, α=0.5, d=64, add vs local", "homogeneous: hetero-vgg, α=0.5, d=64, add vs fedavg"]
    assert (tmp_path / "comparisons.png").stat().st_size > 0 and (tmp_path / "comparisons.pdf").stat().st_size > 0
    assert figures.comparisons_figure(None, tmp_path, "footer") == []  # no comparisons.csv yet: the figure says so
    assert figures.comparisons_figure(comparisons.iloc[2:], tmp_path, "footer") == []  # only 2 pairs: no claim
