"""Provenance: the pinned `photos` data set, the identity of a set of images, and what a program and
its golden manifest record of where their integers came from (calibration images, library
versions)."""
import hashlib
import json
from pathlib import Path
import platform
import sys

import numpy as np
import pytest

from intsim import data, golden
from intsim.data import DataError, SamplePhoto, calibration_record, open_data, photo_crops
from intsim.golden.formats import PROVENANCE
from intsim.images import images_sha256
from intsim.program import Program
from intsim.version import library_versions
from conftest import toy_input, toy_program

# sha256 of the bytes of photo_crops(64, 224, seed): the crops the photos set gave before its
# photos were pinned, and must keep giving
CROPS_SHA256 = {0: "8bc9ea06c0332522f24f61770e52e5909505982e7b625e34a97838ddd1dc422a",
                1: "1633e94e96a9c522a47956c655162a0aa7b1f0646aaba8336f2f3c8674bca667"}


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_images_sha256_is_of_the_shape_and_the_bytes():
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert images_sha256(x) == hashlib.sha256(b"uint8[2,3,4]" + x.tobytes()).hexdigest()
    assert images_sha256(x.reshape(4, 3, 2)) != images_sha256(x)        # same bytes, other images
    assert images_sha256(np.asfortranarray(x)) == images_sha256(x)      # C order whatever the layout
    with pytest.raises(DataError, match="uint8"):
        images_sha256(x.astype(np.int16))


def test_calibration_record_names_the_data_set_without_folders():
    images = np.zeros((3, 1, 4, 4), np.uint8)
    assert calibration_record("/home/someone/cal.npz", images) == \
        {"data": "cal.npz", "images": 3, "sha256": images_sha256(images)}


# --- the photos data set ------------------------------------------------------------------------------

@pytest.fixture
def fresh_photos():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    data.load_sample_photos.cache_clear()
    yield
    data.load_sample_photos.cache_clear()


def test_photos_are_the_pinned_list_and_give_the_same_crops(fresh_photos):
    photos = data.load_sample_photos()
    assert [images_sha256(p) for p in photos] == [ph.sha256 for ph in data.SAMPLE_PHOTOS]
    assert [ph.name for ph in data.SAMPLE_PHOTOS][:2] == ["astronaut", "chelsea"]
    for seed, digest in CROPS_SHA256.items():
        assert hashlib.sha256(photo_crops(64, 224, seed=seed).tobytes()).hexdigest() == digest


def _pin(monkeypatch, *photos):
    monkeypatch.setattr(data, "SAMPLE_PHOTOS", photos)


def test_a_photo_decoding_to_other_pixels_is_refused(monkeypatch, fresh_photos):
    chelsea = data.SAMPLE_PHOTOS[1]
    _pin(monkeypatch, SamplePhoto(chelsea.name, chelsea.package, "0" * 64))
    with pytest.raises(DataError, match=r"'chelsea' \(skimage\.data\.chelsea\(\); here scikit-image "
                                        r"\S+, imageio \S+, Pillow \S+\) decodes to other pixels.*"
                                        r"pip install scikit-image==0\.26\.0"):
        open_data("photos")


def test_a_photo_missing_from_this_version_is_refused(monkeypatch, fresh_photos):
    _pin(monkeypatch, SamplePhoto("no_such_photo", "scikit-image", "0" * 64))
    with pytest.raises(DataError, match="'no_such_photo'.*does not exist in this scikit-image"):
        data.load_sample_photos()


def test_a_photo_whose_package_is_missing_is_refused(monkeypatch, fresh_photos):
    _pin(monkeypatch, data.SAMPLE_PHOTOS[-1])                       # flower.jpg, from scikit-learn
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)      # as if it were not installed
    with pytest.raises(DataError, match=r"'flower\.jpg'.*scikit-learn is not installed"):
        data.load_sample_photos()


def test_a_photo_that_fails_to_decode_is_refused(monkeypatch, fresh_photos):
    from skimage import data as skd

    def broken():
        raise OSError("truncated file")
    monkeypatch.setattr(skd, "astronaut", broken)
    with pytest.raises(DataError, match=r"'astronaut'.*could not be decoded \(OSError: truncated file\)"):
        data.load_sample_photos()


# --- program meta and manifests ---------------------------------------------------------------------

def test_library_versions():
    v = library_versions()
    assert v["python"] == platform.python_version() and v["numpy"] == np.__version__
    assert {"numba", "onnx"} <= set(v)


def test_programs_record_versions_and_load_without_them(tmp_path):
    prog = toy_program()
    assert prog.meta["versions"] == library_versions()
    prog.meta["calibration"] = calibration_record("cal.npz", np.zeros((2, 1, 4, 4), np.uint8))
    prog.save(tmp_path / "p")
    back = Program.load(tmp_path / "p")
    assert {k: back.meta[k] for k in PROVENANCE} == {k: prog.meta[k] for k in PROVENANCE}
    doc = json.loads((tmp_path / "p.json").read_text())           # a program saved before them
    for key in PROVENANCE:
        del doc["meta"][key]
    (tmp_path / "p.json").write_text(json.dumps(doc))
    old = Program.load(tmp_path / "p")
    assert not set(PROVENANCE) & set(old.meta) and old.fingerprint() == prog.fingerprint()


def test_manifests_carry_the_program_s_provenance_when_it_has_one(tmp_path):
    prog, q = toy_program(), toy_input()
    prog.meta["calibration"] = calibration_record("photos", np.ones((2, 3, 8, 8), np.uint8))
    m = golden.dump(prog, q, tmp_path / "with")
    assert m["calibration"] == prog.meta["calibration"] and m["versions"] == prog.meta["versions"]
    assert golden.read_manifest(tmp_path / "with")["calibration"]["data"] == "photos"
    rebuilt = golden.load_program(tmp_path / "with")               # the dump's program keeps them,
    golden.dump(rebuilt, q, tmp_path / "again")                     # so a re-dump is the same dump
    assert _files(tmp_path / "again") == _files(tmp_path / "with")

    for key in PROVENANCE:                                          # an older program: no such keys
        del prog.meta[key]
    m = golden.dump(prog, q, tmp_path / "without")
    assert not set(PROVENANCE) & set(m)
    assert not set(PROVENANCE) & set(golden.load_program(tmp_path / "without").meta)
    r = golden.compare(tmp_path / "with", tmp_path / "without", require_all=True)
    assert r.ok and not r.warnings
