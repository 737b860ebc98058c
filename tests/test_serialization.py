import json
import pickle
import struct

import pytest
import torch

from fedunet.serialization import MAGIC, PayloadError, PayloadSpec, decode, encode


def sample():
    g = torch.Generator().manual_seed(0)
    return {
        "unet.bottleneck.conv.0.weight": torch.randn(8, 4, 3, 3, generator=g),
        "unet.bottleneck.conv.0.bias": torch.randn(8, generator=g),
        "unet.bottleneck.conv.1.num_batches_tracked": torch.tensor(7),
        "odd": torch.randn(3, generator=g),  # 12 bytes: forces alignment padding
    }


def test_fp32_round_trip_is_exact_and_length_is_what_is_sent():
    tensors = sample()
    blob = encode(tensors)
    back, meta = decode(blob, PayloadSpec.for_tensors(tensors))
    assert meta == {}
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)
    raw = sum(t.numel() * t.element_size() for t in tensors.values())
    assert raw < len(blob) < raw + 1024  # header and alignment only


@pytest.mark.parametrize("dtype, torch_dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_half_precision_on_the_wire(dtype, torch_dtype):
    tensors = sample()
    blob = encode(tensors, float_dtype=dtype)
    back, _ = decode(blob, PayloadSpec.for_tensors(tensors, dtype))
    w = "unet.bottleneck.conv.0.weight"
    assert back[w].dtype == torch_dtype
    assert torch.equal(back[w], tensors[w].to(torch_dtype))
    assert back["unet.bottleneck.conv.1.num_batches_tracked"].dtype == torch.int64  # integers keep their dtype
    big = {"w": torch.randn(1000)}
    assert len(encode(big, float_dtype=dtype)) < 0.6 * len(encode(big))


def test_metadata_round_trip():
    _, meta = decode(encode({"a": torch.zeros(2)}, metadata={"k": "v"}))
    assert meta == {"k": "v"}


def test_empty_and_zero_sized_tensors():
    back, _ = decode(encode({"z": torch.zeros(0, 3)}))
    assert back["z"].shape == (0, 3)
    assert decode(encode({}))[0] == {}


def _spec():
    return PayloadSpec.for_tensors(sample(), max_bytes=10_000)


def _rewrite_header(blob, change):
    n = struct.unpack("<Q", bytes(blob[8:16]))[0]
    header = json.loads(bytes(blob[16 : 16 + n]))
    change(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    return MAGIC + struct.pack("<Q", len(new)) + new + bytes(blob[16 + n :])


@pytest.mark.parametrize(
    "attack, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b[:20], "header length"),
        (lambda b: bytes(b) + b"\0" * 8, "trailing bytes"),
        (lambda b: b"X" + bytes(b)[1:], "bad magic"),
        (lambda b: bytes(b) + b"\0" * 20_000, "exceeds the limit"),
        (lambda b: pickle.dumps({"w": torch.zeros(2)}), "not a fedunet payload"),
        (lambda b: MAGIC + struct.pack("<Q", 8) + b"not json", "not valid JSON"),
        (lambda b: encode({**sample(), "extra": torch.zeros(1)}), "unexpected \\['extra'\\]"),
        (lambda b: encode({k: v for k, v in sample().items() if k != "odd"}), "missing \\['odd'\\]"),
        (lambda b: encode({**sample(), "odd": torch.zeros(4)}), "shape \\(4,\\), expected \\(3,\\)"),
        (lambda b: encode({**sample(), "odd": torch.zeros(3, dtype=torch.float64)}), "dtype float64, expected float32"),
        (lambda b: encode({**sample(), "odd": torch.tensor([1.0, float("nan"), 0.0])}), "NaN or Inf"),
        (lambda b: encode({**sample(), "odd": torch.tensor([1.0, float("inf"), 0.0])}), "NaN or Inf"),
        (lambda b: _rewrite_header(b, lambda h: h["tensors"][0].update(offset=8)), "canonical layout"),
        (lambda b: _rewrite_header(b, lambda h: h["tensors"][0].update(dtype="object")), "not allowed"),
        (lambda b: _rewrite_header(b, lambda h: h["tensors"][0].update(shape=[-1])), "non-negative"),
        (lambda b: _rewrite_header(b, lambda h: h.update(extra=1)), "exactly the keys"),
        (lambda b: _rewrite_header(b, lambda h: h["tensors"].append(dict(h["tensors"][0]))), "repeated"),
        (lambda b: encode(sample(), metadata={"note": "hi"}), "unexpected metadata"),
    ],
)
def test_bad_payloads_are_rejected_with_a_clear_error(attack, message):
    bad = attack(encode(sample()))
    with pytest.raises(PayloadError, match=message):
        decode(bad, _spec())


def test_a_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with pytest.raises(PayloadError):
        decode(pickle.dumps(Evil()), _spec())
    # even behind a valid prefix and header, data bytes are only ever read as numbers
    evil = pickle.dumps(Evil())
    with pytest.raises(PayloadError):
        decode(MAGIC + struct.pack("<Q", 0) + evil, _spec())
    assert not marker.exists()


def test_decoded_tensors_are_views_of_the_buffer():
    blob = encode({"a": torch.arange(4, dtype=torch.float32)})
    back, _ = decode(blob)
    blob[-4:] = struct.pack("<f", 9.0)
    assert back["a"][-1] == 9.0


def test_nan_hidden_in_alignment_padding_is_rejected():
    tensors = {"odd": torch.ones(3), "next": torch.ones(2)}  # 12 bytes, then 4 bytes of padding
    blob = encode(tensors)
    start = len(blob) - 16 - 8  # data: 12 + 4 padding + 8
    blob[start + 12 : start + 16] = struct.pack("<f", float("nan"))
    with pytest.raises(PayloadError, match="padding"):
        decode(blob, PayloadSpec.for_tensors(tensors))


def test_repeated_headers_are_checked_against_each_spec():
    tensors = sample()
    blob = bytes(encode(tensors))
    decode(blob, PayloadSpec.for_tensors(tensors))  # accepted once for this spec
    other = PayloadSpec.for_tensors({**tensors, "odd": torch.zeros(4)})
    with pytest.raises(PayloadError, match="shape"):
        decode(blob, other)  # the memo of one spec never vouches for another
