"""``fedunet info`` (fedunet/cli_info.py): the paper's byte figures, FLOPs, the methods, bad input."""

from helpers import run_fedunet as fedunet


def test_info_shows_the_papers_byte_figures():
    r = fedunet("info", "--architectures", "vgg16", "cnn")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    d1024 = next(ln for ln in lines if ln.strip().startswith("1024"))
    d128 = next(ln for ln in lines if ln.strip().startswith("128 "))
    vgg16 = next(ln for ln in lines if ln.strip().startswith("vgg16"))
    assert "14,161,920" in d1024 and "56.66" in d1024
    assert "221,952" in d128 and "0.89" in d128
    assert "14,728,266" in vgg16 and "58.9" in vgg16
    assert "GFLOPs" in r.stdout


def test_info_methods_lists_every_method():
    r = fedunet("info", "--methods")
    assert r.returncode == 0
    for name in ("fedunet", "fedunet-unet", "fedavg", "local"):
        assert name in r.stdout


def test_info_refuses_an_unknown_architecture_naming_the_allowed():
    r = fedunet("info", "--architectures", "vgg17")
    assert r.returncode == 2 and "--architectures: unknown ['vgg17']; allowed: cnn" in r.stderr and "Traceback" not in r.stderr
