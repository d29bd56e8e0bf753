"""Weights files: a corrupt file is called corrupt, an unsafe one unsafe; offline fails fast."""

import os
import time

import numpy as np
import pytest
import torch

from sktransfer import WeightsUnavailableError
from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.weights import (  # the real one: tests patch the module's
    host_reachable,
    load_weights_file,
)


def _truncated(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:600])
    return path


@pytest.mark.parametrize("make", [
    lambda t: (t / "random.pth").write_bytes(os.urandom(2000)) and t / "random.pth",
    lambda t: (t / "text.pth").write_bytes(b"name,value\n1,2\n") and t / "text.pth",
    lambda t: (t / "pickle-ish.pth").write_bytes(b"\x80\x04" + os.urandom(500)) and t / "pickle-ish.pth",
    _truncated,
], ids=["random bytes", "a CSV", "corrupt pickle stream", "truncated zip"])
def test_a_corrupt_file_is_not_called_unsafe_and_gets_no_unsafe_advice(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ValueError, match="is not a valid weights file") as error:
        load_weights_file(path)
    message = str(error.value)
    assert "pickled" not in message and "weights_only=False" not in message
    assert "trusted source" not in message


def test_offline_torchvision_weights_fail_at_once_without_printing(capsys):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="no network connection.*weights='/path/to/"):
        resolve_backbone("resnet18", weights="imagenet")
    assert time.perf_counter() - start < 5
    captured = capsys.readouterr()
    assert "Downloading" not in captured.out + captured.err


def test_host_reachable_on_loopback():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not host_reachable("127.0.0.1", port, timeout=1)  # bound, not listening
        server.listen()
        assert host_reachable("127.0.0.1", port, timeout=1)


def test_many_corrupt_pickle_streams_all_get_the_same_clear_error(tmp_path):
    # torch's weights-only unpickler fails on corrupt bytes with whatever exception its
    # stack machine hits (IndexError, KeyError, ...): every one must read the same.
    rng = np.random.default_rng(0)
    for index in range(100):
        path = tmp_path / f"corrupt{index}.pth"
        path.write_bytes(b"\x80\x04" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="is not a valid weights file"):
            load_weights_file(path)


def test_a_zip_weights_file_with_a_damaged_member_gets_the_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    name_and_extra = int.from_bytes(data[member.header_offset + 26:member.header_offset + 28],
                                    "little") + int.from_bytes(
        data[member.header_offset + 28:member.header_offset + 30], "little")
    start = member.header_offset + 30 + name_and_extra  # the pickle stream's bytes
    failures = 0
    for offset in range(start, start + member.compress_size):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            load_weights_file(path)
        except ValueError as error:
            assert "weights file" in str(error)
            failures += 1
    assert failures > 0  # some damage must be caught, and only as ValueError
