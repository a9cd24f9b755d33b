import boto3
import pytest
from moto import mock_aws

from facegate.data.folder import ImageFolder, scan_image_folder, split_identities
from facegate.data.storage import LocalStorage, S3Storage, build_manifest, check_manifest, open_storage, write_manifest
from facegate.data.synthetic import write_synthetic_folder
from facegate.errors import DataError, StorageError

pytestmark = pytest.mark.unit


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_folder(root, 10, 3)
    (root / "stray.jpg").write_bytes(b"x")
    (root / "id_0000" / ".hidden.jpg").write_bytes(b"x")
    return root


def test_scan_and_identity_disjoint_split(dataset):
    samples, stray = scan_image_folder(dataset)
    assert len(samples) == 30
    assert stray == ["stray.jpg"]
    ds = ImageFolder(dataset)
    assert ds.num_classes == 10
    train, val = split_identities(ds, 0.3, seed=1)
    assert set(train.identities).isdisjoint(val.identities)
    assert len(train) + len(val) == 30
    assert len(val.identities) == 3
    assert sorted({s.label for s in val.samples}) == [0, 1, 2]  # relabelled densely
    again, _ = split_identities(ds, 0.3, seed=1)
    assert again.identities == train.identities
    other, _ = split_identities(ds, 0.3, seed=2)
    assert other.identities != train.identities
    img, label = train.load(0)
    assert img.shape == (112, 112, 3)
    assert label == 0


def test_split_needs_two_identities(tmp_path):
    write_synthetic_folder(tmp_path, 1, 2)
    with pytest.raises(DataError, match="two identities"):
        split_identities(ImageFolder(tmp_path))


def test_manifest_is_content_addressed_and_detects_changes(dataset):
    m1 = write_manifest(dataset)
    assert m1["n_files"] == 30
    assert m1["n_identities"] == 10
    assert build_manifest(dataset)["version"] == m1["version"]  # manifest.json itself is not part of it
    assert check_manifest(dataset).ok
    target = dataset / "id_0003" / "0001.jpg"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    (dataset / "id_0004" / "0000.jpg").unlink()
    (dataset / "id_0005" / "new.jpg").write_bytes(b"new")
    diff = check_manifest(dataset)
    assert diff.changed == ["id_0003/0001.jpg"]
    assert diff.missing == ["id_0004/0000.jpg"]
    assert diff.added == ["id_0005/new.jpg"]
    assert build_manifest(dataset)["version"] != m1["version"]


def test_local_storage_roundtrip_and_key_safety(tmp_path, dataset):
    store = open_storage(str(tmp_path / "store"))
    assert isinstance(store, LocalStorage)
    assert not (tmp_path / "store").exists()  # opening creates nothing
    assert store.upload_dir(dataset, "datasets/v1") == 31  # 30 images + stray.jpg; hidden files stay local
    assert store.exists("datasets/v1/id_0000/0000.jpg")
    out = tmp_path / "back"
    store.download_dir("datasets/v1", out)
    assert (out / "id_0002" / "0001.jpg").read_bytes() == (dataset / "id_0002" / "0001.jpg").read_bytes()
    for bad in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put_bytes(bad, b"x")
    with pytest.raises(StorageError) as e:
        store.get_bytes("nope")
    assert e.value.code == "not_found"
    store.delete("datasets/v1/stray.jpg")
    assert not store.exists("datasets/v1/stray.jpg")


def test_s3_storage_roundtrip(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="facegate")
        store = open_storage("s3://facegate/data")
        assert isinstance(store, S3Storage)
        write_manifest(dataset)
        n = store.upload_dir(dataset, "lfw/v1")
        assert n == 32  # 30 images, stray.jpg, manifest.json
        keys = list(store.list("lfw/v1/id_0001"))
        assert keys == ["lfw/v1/id_0001/0000.jpg", "lfw/v1/id_0001/0001.jpg", "lfw/v1/id_0001/0002.jpg"]
        assert boto3.client("s3").head_object(Bucket="facegate", Key="data/lfw/v1/id_0001/0000.jpg")
        out = tmp_path / "pulled"
        store.download_dir("lfw/v1", out)
        assert check_manifest(out).ok
        assert not store.exists("lfw/v1/none.jpg")
        with pytest.raises(StorageError) as e:
            store.get_bytes("lfw/v1/none.jpg")
        assert e.value.code == "not_found"
        assert "testing" not in str(e.value)  # no credential in an error


def test_unknown_scheme():
    with pytest.raises(StorageError, match="unsupported"):
        open_storage("gs://bucket/x")
