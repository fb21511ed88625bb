import sys

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skmpsae.plotting import plot_atoms, plot_r2_vs_l0  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_plot_atoms_grid_and_png(tmp_path):
    D = np.random.RandomState(0).randn(100, 784)
    fig = plot_atoms(D)
    assert len(image_axes(fig)) == 64  # n_atoms default
    assert image_axes(fig)[0].images[0].get_array().shape == (28, 28)
    path = tmp_path / "atoms.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_atoms_symmetric_color_scale():
    D = np.zeros((2, 16))
    D[0, 3] = -2.0
    D[0, 5] = 0.5
    fig = plot_atoms(D)
    assert image_axes(fig)[0].images[0].get_clim() == (-2.0, 2.0)
    assert image_axes(fig)[1].images[0].get_clim() == (-1.0, 1.0)  # all-zero atom


def test_plot_atoms_usage_order_and_titles():
    D = np.random.RandomState(0).randn(5, 12)
    codes = np.zeros((4, 5))
    codes[:, 3] = 1.0
    codes[:2, 1] = 1.0
    fig = plot_atoms(D, usage=codes, image_shape=(3, 4), n_atoms=3)
    titles = [ax.get_title() for ax in image_axes(fig)]
    assert titles == ["#3 (100.0%)", "#1 (50.0%)", "#0 (0.0%)"]
    fig = plot_atoms(D, usage=[0.1, 0.0, 0.3, 0.2, 0.0], order="index", image_shape=(4, 3))
    assert [ax.get_title() for ax in image_axes(fig)][:2] == ["#0 (10.0%)", "#1 (0.0%)"]


def test_plot_atoms_from_estimator_and_given_figure():
    X = np.random.RandomState(0).randn(30, 16)
    pca = PCA(n_components=4)
    with pytest.raises(NotFittedError):
        plot_atoms(pca)
    fig = plt.figure()
    out = plot_atoms(pca.fit(X), fig=fig, n_cols=4)
    assert out is fig and len(image_axes(fig)) == 4
    assert image_axes(fig)[3].get_subplotspec().colspan.start == 3  # one row of 4


def test_plot_atoms_validation():
    D = np.ones((3, 10))
    with pytest.raises(ValueError, match="image_shape"):
        plot_atoms(D)
    with pytest.raises(ValueError, match="image_shape"):
        plot_atoms(D, image_shape=(3, 3))
    with pytest.raises(ValueError, match="usage"):
        plot_atoms(D, image_shape=(2, 5), order="usage")
    with pytest.raises(ValueError, match="usage must have one value per atom"):
        plot_atoms(D, image_shape=(2, 5), usage=[1.0, 2.0])
    with pytest.raises(ValueError, match="order"):
        plot_atoms(D, image_shape=(2, 5), order="size")
    with pytest.raises(ValueError, match="n_atoms"):
        plot_atoms(D, image_shape=(2, 5), n_atoms=0)
    with pytest.raises(TypeError, match="'n_atoms' parameter of plot_atoms must be an int"):
        plot_atoms(D, image_shape=(2, 5), n_atoms=True)
    with pytest.raises(ValueError, match="'n_cols' parameter of plot_atoms must be an int"):
        plot_atoms(D, image_shape=(2, 5), n_cols=0)
    with pytest.raises(TypeError, match="'cmap' parameter of plot_atoms must be"):
        plot_atoms(D, image_shape=(2, 5), cmap=3)
    with pytest.raises(TypeError, match="'fig' parameter .* implementing 'add_subplot'"):
        plot_atoms(D, image_shape=(2, 5), fig="figure")
    with pytest.raises(TypeError, match="'components_or_estimator' parameter"):
        plot_atoms("atoms")


def test_plot_r2_vs_l0_curves(tmp_path):
    results = {
        "MP-SAE": [(16, 0.85), (4, 0.61), (8, 0.74)],
        "TopK": {"l0": np.array([4, 8, 16]), "r2": np.array([0.55, 0.70, 0.81])},
        "ReLU": np.array([[2.0, 0.3], [3.0, 0.4]]),  # 2 x 2: rows are points
    }
    ax = plot_r2_vs_l0(results, logx=True)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["MP-SAE", "TopK", "ReLU"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [4, 8, 16])  # sorted by L0
    np.testing.assert_array_equal(lines[0].get_ydata(), [0.61, 0.74, 0.85])
    np.testing.assert_array_equal(lines[2].get_ydata(), [0.3, 0.4])
    assert lines[0].get_marker() == "o" and ax.get_xscale() == "log"
    assert ax.get_legend() is not None
    ax.figure.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_plot_r2_vs_l0_on_given_axes_and_dataframe():
    pd = pytest.importorskip("pandas")
    _, ax = plt.subplots()
    frame = pd.DataFrame({"l0": [1, 2], "r2": [0.1, 0.2]})
    assert plot_r2_vs_l0({"a": frame}, ax=ax) is ax


def test_plot_r2_vs_l0_validation():
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_r2_vs_l0({})
    with pytest.raises(TypeError, match="'results' parameter .* instance of 'collections.abc.Map"):
        plot_r2_vs_l0([(1.0, 0.5)])
    with pytest.raises(TypeError, match="'logx' parameter of plot_r2_vs_l0"):
        plot_r2_vs_l0({"a": [(1.0, 0.5)]}, logx="yes")
    with pytest.raises(TypeError, match="'ax' parameter .* implementing 'plot'"):
        plot_r2_vs_l0({"a": [(1.0, 0.5)]}, ax="axes")
    with pytest.raises(ValueError, match="pairs"):
        plot_r2_vs_l0({"a": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="NaN"):
        plot_r2_vs_l0({"a": [(1.0, np.nan)]})
    with pytest.raises(ValueError, match="different lengths"):
        plot_r2_vs_l0({"a": {"l0": [1, 2], "r2": [0.5]}})


def test_missing_matplotlib_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install -e .\.\[plot\]."):
        plot_r2_vs_l0({"a": [(1, 0.5)]})
