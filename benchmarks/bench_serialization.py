"""Bottleneck payloads: our format (serialize + validate + deserialize) against torch.save/load
through BytesIO, safetensors, and a plain copy of the same bytes (the memcpy limit)."""

import io
import os

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedunet.model import select_state
from fedunet.serialization import WIRE_DTYPES, Encoder, PayloadSpec, decode, encode
from fedunet.unet import BOTTLENECK_PREFIX, UNet


def bottleneck(d: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    unet = UNet(3, d, 32)
    unet.bottleneck.apply(lambda m: torch.nn.init.normal_(m.weight) if hasattr(m, "weight") and m.weight is not None else None)
    state = select_state(torch.nn.ModuleDict({"unet": unet}), BOTTLENECK_PREFIX)
    return {k: v.clone() for k, v in state.items()}


SIZES = (64, 128, 256, 512, 1024)


def _cases():
    return [(d, dt) for d in SIZES for dt in WIRE_DTYPES]


def _cast(tensors, dtype):
    target = WIRE_DTYPES[dtype]
    return {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}


@pytest.mark.parametrize("impl", ["ours", "torch", "safetensors", "memcpy"])
@pytest.mark.parametrize("d, dtype", _cases())
def test_serialization(benchmark, bench_size, impl, d, dtype):
    if bench_size == "small" and d > 128:
        pytest.skip("full size only")
    tensors = bottleneck(d)
    spec = PayloadSpec.for_tensors(tensors, dtype)
    nbytes = len(encode(tensors, float_dtype=dtype))

    if impl == "ours":
        encoder = Encoder()  # as in the engine: one per sender, reused every round

        def roundtrip():
            return decode(encoder.encode(tensors, float_dtype=dtype), spec)[0]
    elif impl == "torch":

        def roundtrip():
            buf = io.BytesIO()
            torch.save(_cast(tensors, dtype), buf)
            return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    elif impl == "safetensors":

        def roundtrip():
            return st_load(st_save(_cast(tensors, dtype)))
    else:
        src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
        dst = torch.empty_like(src)

        def roundtrip():
            return dst.copy_(src)

    benchmark.group = "serialization"
    benchmark.extra_info.update(case=f"d{d}-{dtype}", impl=impl, bytes=nbytes)
    out = benchmark(roundtrip)
    if impl != "memcpy":
        back = out
        for name, t in _cast(tensors, dtype).items():
            assert back[name].dtype == t.dtype and torch.equal(back[name], t), name  # exact, fp32 included
        if dtype == "float32":
            assert all(torch.equal(back[n], tensors[n]) for n in tensors)


DEVICE = os.environ.get("FEDUNET_BENCH_DEVICE", "cpu")


@pytest.mark.parametrize("impl", ["ours", "torch", "memcpy"])
@pytest.mark.parametrize("d", SIZES)
def test_serialization_from_device_memory(benchmark, bench_size, impl, d):
    """A client's upload as the engine makes it on a GPU: the bottleneck read from device memory
    into the payload (ours: Encoder, one copy per tensor; torch: torch.save of the device tensors),
    then decoded on the host; memcpy: one device-to-host copy of the same bytes (the limit).
    On a CPU-only machine the "device" is the CPU (the check that the code runs)."""
    if bench_size == "small" and d > 128:
        pytest.skip("full size only")
    tensors = {k: v.to(DEVICE) for k, v in bottleneck(d).items()}
    spec = PayloadSpec.for_tensors(tensors, "float32")
    nbytes = len(encode(tensors, float_dtype="float32"))

    def synced(fn):
        def run():
            out = fn()
            if DEVICE.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        return run

    if impl == "ours":
        encoder = Encoder()

        def roundtrip():
            return decode(encoder.encode(tensors, float_dtype="float32"), spec)[0]
    elif impl == "torch":

        def roundtrip():
            buf = io.BytesIO()
            torch.save(tensors, buf)
            return torch.load(io.BytesIO(buf.getvalue()), weights_only=True, map_location="cpu")
    else:
        src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=DEVICE)
        dst = torch.empty(nbytes, dtype=torch.uint8)

        def roundtrip():
            return dst.copy_(src)

    benchmark.group = "serialization-device"
    benchmark.extra_info.update(case=f"d{d}-float32-{DEVICE}", impl=impl, bytes=nbytes)
    out = benchmark(synced(roundtrip))
    if impl != "memcpy":
        assert all(torch.equal(out[n].cpu(), tensors[n].cpu()) for n in tensors)
