import pytest

from fedunet.registry import Registry


@pytest.fixture
def reg():
    return Registry("architecture", field="model.architectures")


def test_register_with_a_name(reg):
    @reg.register("vgg11")
    def build(in_channels, input_size, width):
        return ("vgg", in_channels)

    assert build(3, 32, 1.0) == ("vgg", 3)  # the decorator returns the function itself
    assert reg.get("vgg11") is build and reg.names() == ["vgg11"]


def test_bare_register_names_a_function_by_its_name(reg):
    @reg.register
    def resnet18(in_channels, input_size, width): ...

    @reg.register()
    def resnet34(in_channels, input_size, width): ...

    assert reg.get("resnet18") is resnet18 and reg.get("resnet34") is resnet34


def test_bare_register_names_a_class_by_its_name_attribute(reg):
    class Base:
        name = ""

    @reg.register
    class FedAvg(Base):
        name = "fedavg"

    @reg.register
    class Unnamed(Base):  # inherits an empty name: falls back to the class's own name
        pass

    assert reg.get("fedavg") is FedAvg and reg.get("Unnamed") is Unnamed
    assert reg.names() == ["Unnamed", "fedavg"]


def test_names_are_sorted(reg):
    for name in ("vgg16", "cnn", "resnet18"):
        reg.register(name)(lambda **kw: None)
    assert reg.names() == ["cnn", "resnet18", "vgg16"]


def test_a_name_registered_twice_is_an_error(reg):
    @reg.register("cnn")
    def first(): ...

    def second(): ...

    with pytest.raises(ValueError, match=r"architecture 'cnn' is registered twice: by .*first and by .*second"):
        reg.register("cnn")(second)
    assert reg.get("cnn") is first  # the first registration stands


def test_a_class_name_registered_twice_is_an_error(reg):
    class A:
        name = "local"

    class B:
        name = "local"

    reg.register(A)
    with pytest.raises(ValueError, match="'local' is registered twice"):
        reg.register(B)


def test_unknown_name_names_the_field_and_lists_the_allowed_values(reg):
    for name in ("vgg11", "cnn"):
        reg.register(name)(lambda **kw: None)
    with pytest.raises(ValueError) as err:
        reg.get("vgg12")
    assert str(err.value) == "model.architectures: unknown architecture 'vgg12'; allowed values: cnn, vgg11"


def test_unhashable_name_is_an_unknown_name():
    with pytest.raises(ValueError, match=r"method: unknown method \['fedavg'\]; allowed values: $"):
        Registry("method", field="method").get(["fedavg"])
