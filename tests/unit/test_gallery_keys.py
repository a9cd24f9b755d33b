import base64

import pytest

from facegate.serve.gallery import GalleryError, KeyRing, check_student_id

pytestmark = pytest.mark.unit


def test_keyring_roundtrip_rotation_and_tamper():
    k1, k2 = KeyRing.generate("k1"), KeyRing.generate("k2")
    old = KeyRing.from_env({"FACEGATE_GALLERY_KEYS": k1})
    kid, nonce, ct = old.encrypt(b"face bytes", b"s1")
    assert kid == "k1"
    assert b"face bytes" not in ct
    new = KeyRing.from_env({"FACEGATE_GALLERY_KEYS": f"{k2},{k1}"})
    assert new.active == "k2"
    assert new.decrypt(kid, nonce, ct, b"s1") == b"face bytes"  # old key still decrypts
    with pytest.raises(GalleryError, match="authentication"):
        new.decrypt(kid, nonce, ct, b"s2")  # bound to the student id
    with pytest.raises(GalleryError, match="not in FACEGATE_GALLERY_KEYS"):
        KeyRing.from_env({"FACEGATE_GALLERY_KEYS": k2}).decrypt(kid, nonce, ct, b"s1")


def test_bad_keys_never_echo_material():
    secret = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(GalleryError) as e:
        KeyRing.from_env({"FACEGATE_GALLERY_KEYS": f"k1:{secret}"})
    assert secret not in str(e.value)
    with pytest.raises(GalleryError, match="no gallery encryption key"):
        KeyRing.from_env({})
    with pytest.raises(GalleryError, match="base64"):
        KeyRing.from_env({"FACEGATE_GALLERY_KEYS": "k1:!!notbase64!!"})


@pytest.mark.parametrize("bad", ["", " s1", "s1\n", "a" * 65, "x\x00y"])
def test_student_id_validation(bad):
    with pytest.raises(GalleryError):
        check_student_id(bad)


def test_sql_looking_and_unicode_ids_are_just_ids():
    for ok in ("1'; DROP TABLE students;--", "Ünïcødé-学生-42"):
        assert check_student_id(ok) == ok
