"""Sealed backups: chunked AES-GCM that fails on any change, reorder, truncation or wrong key."""

import pytest

from facegate.serve import backup
from facegate.serve.backup import BackupError, seal, unseal
from facegate.serve.gallery import KeyRing

pytestmark = pytest.mark.unit


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(backup, "CHUNK", 64)  # many chunks from a small input


def _keys(*entries):
    return KeyRing.from_env({"FACEGATE_GALLERY_KEYS": ",".join(entries)})


@pytest.mark.parametrize("size", [0, 1, 64, 65, 1000])
def test_roundtrip_any_size(tmp_path, small_chunks, rng, size):
    plain = rng.integers(0, 256, size, dtype="uint8").tobytes()
    (tmp_path / "p").write_bytes(plain)
    keys = _keys(KeyRing.generate("k1"))
    header = seal(tmp_path / "p", tmp_path / "s", keys, {"dialect": "sqlite"})
    assert header["key_id"] == "k1" and header["dialect"] == "sqlite"
    assert unseal(tmp_path / "s", tmp_path / "out", keys)["salt"] == header["salt"]
    assert (tmp_path / "out").read_bytes() == plain
    if size >= 16:
        assert plain[:16] not in (tmp_path / "s").read_bytes()


def test_tamper_reorder_truncate_and_keys_all_fail(tmp_path, small_chunks):
    k1, k2 = KeyRing.generate("k1"), KeyRing.generate("k2")
    (tmp_path / "p").write_bytes(bytes(range(256)) * 2)  # 8 chunks of 64
    seal(tmp_path / "p", tmp_path / "s", _keys(k1), {"dialect": "sqlite"})
    sealed = (tmp_path / "s").read_bytes()
    body_at = len(sealed) - 8 * (64 + 16)
    chunk = 64 + 16

    def attempt(data: bytes, keys: KeyRing) -> BackupError:
        (tmp_path / "x").write_bytes(data)
        with pytest.raises(BackupError) as e:
            unseal(tmp_path / "x", tmp_path / "out", keys)
        return e.value

    flipped = bytearray(sealed)
    flipped[body_at + 5] ^= 1
    assert attempt(bytes(flipped), _keys(k1)).code == "bad_backup"
    head, body = sealed[:body_at], sealed[body_at:]
    swapped = head + body[chunk : 2 * chunk] + body[:chunk] + body[2 * chunk :]
    assert attempt(swapped, _keys(k1)).code == "bad_backup"
    assert attempt(sealed[: body_at + 7 * chunk], _keys(k1)).code == "bad_backup"  # a whole last chunk missing
    relabelled = sealed.replace(b'"dialect": "sqlite"', b'"dialect": "sqlitf"')
    assert attempt(relabelled, _keys(k1)).code == "bad_backup"  # the header is authenticated too
    assert attempt(sealed, _keys(k2)).code == "no_key"  # sealed with k1, which this ring lacks
    assert unseal(tmp_path / "s", tmp_path / "out", _keys(k2, k1))["key_id"] == "k1"  # after a rotation: still opens
    assert attempt(b"PK\x03\x04" + sealed, _keys(k1)).code == "bad_backup"
