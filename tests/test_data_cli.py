"""`hw2 data` on bad input: one line `error: ...` on stderr and exit status 2, naming the culprit
and the fix; or `warning: ...` lines that count what was converted or is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from hw2lib.cli import main


def _hw2_data(capsys, tmp_path, *args):
    rc = main(["data", "--data-dir", str(tmp_path / "store"), *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(("error", "warning", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_broken_symlink_as_source(capsys, tmp_path):
    link = tmp_path / "EuroSAT.zip"
    link.symlink_to(tmp_path / "moved" / "EuroSAT.zip")
    rc, _, err = _hw2_data(capsys, tmp_path, "--source", link)
    line = _one_error(err)
    assert rc == 2 and str(link) in line and "broken symbolic link" in line
    assert str(tmp_path / "moved" / "EuroSAT.zip") in line


@pytest.mark.parametrize("option", ["--image-folder", "--source"])
def test_broken_symlink_inside_the_image_folder(option, capsys, tmp_path, small_folder):
    link = small_folder / "a" / "a_9.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    rc, _, err = _hw2_data(capsys, tmp_path, option, small_folder)
    line = _one_error(err)
    assert rc == 2 and str(link) in line and "broken symbolic link" in line
    assert "point it at an existing file or move it out" in line


def test_source_and_data_dir_are_alternatives(capsys, tmp_path, small_folder):
    rc, _, err = _hw2_data(capsys, tmp_path, "--source", small_folder, "--image-folder",
                           small_folder)
    line = _one_error(err)
    assert rc == 2 and "--source and --image-folder are alternatives" in line
    assert "give one of them" in line
    assert not (tmp_path / "store").exists()  # refused before anything was written


@pytest.mark.parametrize("size", [0, -3])
def test_image_size_must_be_positive(size, capsys, tmp_path, small_folder):
    rc, _, err = _hw2_data(capsys, tmp_path, "--image-folder", small_folder, "--image-size", size)
    line = _one_error(err)
    assert rc == 2 and "--image-size must be a positive number of pixels" in line
    assert line.endswith(f"got {size}")


def test_store_that_is_a_file(capsys, tmp_path, small_folder):
    store = tmp_path / "store"
    store.write_text("a file")
    rc, _, err = _hw2_data(capsys, tmp_path, "--image-folder", small_folder)
    line = _one_error(err)
    assert rc == 2 and str(store) in line and "--data-dir" in line


def test_resized_and_alpha_images_are_counted(capsys, tmp_path, small_folder):
    Image.new("RGBA", (16, 16), (1, 2, 3, 4)).save(small_folder / "a" / "rgba.png")
    Image.new("RGB", (30, 20)).save(small_folder / "b" / "big.png")
    Image.new("RGB", (8, 8)).save(small_folder / "c" / "small.png")
    rc, out, err = _hw2_data(capsys, tmp_path, "--image-folder", small_folder, "--image-size", 16)
    warns = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert rc == 0 and "total" in out
    assert warns == [f"warning: images in {small_folder}: resized 2 images of other sizes to 16×16; "
                     "dropped the alpha channel (transparency) of 1 image"]


def test_empty_splits_are_named(capsys, tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "tiny", ("big", "one", "two"), counts=[6, 1, 2], size=16)
    rc, _, err = _hw2_data(capsys, tmp_path, "--image-folder", root, "--image-size", 16)
    warns = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert rc == 0 and len(warns) == 1
    assert warns[0].startswith("warning: the val split has no image of one (1 image), two (2 "
                               "images); the test split has no image of one (1 image)")
    root2 = make_imagefolder(tmp_path / "tinier", ("one", "two"), counts=[1, 2], size=16)
    rc, _, err = _hw2_data(capsys, tmp_path, "--image-folder", root2, "--image-size", 16)
    line = _one_error(err)
    assert rc == 2 and "the val split is empty" in line and "(one, two)" in line


def test_the_installed_command_prints_no_traceback(tmp_path, small_folder):
    """The console entry point itself (not just main()): exit status 2 and one error line."""
    res = subprocess.run([sys.executable, "-m", "hw2lib.cli", "data", "--data-dir",
                          str(tmp_path / "store"), "--image-folder", str(small_folder), "--image-size", "0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: --image-size must be a positive number of pixels (the side of the square every "
        "image is decoded to, e.g. 64), got 0"]
