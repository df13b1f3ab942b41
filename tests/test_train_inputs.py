"""What users feed the trainer: image files of every bit depth, broken CSV files, unusable output folders,
killed runs; each bad input ends in a message naming the file or the option, never a traceback or a silently
wrong dataset."""

from __future__ import annotations

import json
import os
import struct
import zlib

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from fastgp.train import ConfigError, Trainer, prepare, run  # noqa: E402
from fastgp.train import checkpoint, distributed  # noqa: E402
from fastgp.train.__main__ import main  # noqa: E402
from fastgp.train.data import load_csv, load_image_folder  # noqa: E402
from train_helpers import tiny, write_csv  # noqa: E402


# ------------------------------------------------------------------ images
def _png(path, width, height, bit_depth, color_type, rows: bytes = b""):
    """A PNG written by hand: Pillow cannot write 16-bit RGB, nor a header that lies about the size."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) +
                chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3])
def test_high_bit_depth_images_are_rescaled_by_their_range(tmp_path, channels):
    """16-bit and float samples map to [-1, 1] by the mode's full scale (convert('L') would clip them to 255)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 16384, np.uint16)).save(folder / "a16.png")       # 0.25 of 65535
    Image.fromarray(np.full((16, 16), 49151, np.uint16)).save(folder / "b16.tif")       # 0.75
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(folder / "c_float.tif")    # 0.5
    value = np.full((4, 4, 3), 40000, ">u2")  # 16-bit RGB: Pillow reads the high byte, 156 of 255
    _png(folder / "d_rgb16.png", 4, 4, 16, 2, b"".join(b"\x00" + value[y].tobytes() for y in range(4)))
    ds = load_image_folder(str(folder), 8, channels)
    means = ds.data.mean(dim=(1, 2, 3))
    expected = torch.tensor([16384 / 65535, 49151 / 65535, 0.5, 156 / 255]) * 2 - 1
    torch.testing.assert_close(means, expected, atol=1e-5, rtol=0)
    assert ds.data.shape == (4, channels, 8, 8)


@pytest.mark.parametrize("array,match", [
    (np.full((8, 8), 3.0, np.float32), r"mode 'F'\) has values in \[3, 3\]"),
    (np.full((8, 8), np.nan, np.float32), "NaN or inf"),
    (np.full((8, 8), 100000, np.int32), "32-bit integer samples"),
])
def test_images_without_a_known_range_are_refused(tmp_path, array, match):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(array).save(folder / "odd.tif")
    with pytest.raises(ConfigError, match=match) as e:
        load_image_folder(str(folder), 8, 1)
    assert "odd.tif" in str(e.value)


def test_decompression_bomb_names_the_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _png(folder / "bomb.png", 30000, 30000, 8, 0)  # the header claims 900 Mpixel
    with pytest.raises(ConfigError, match=r"bomb\.png.*decompression-bomb"):
        load_image_folder(str(folder), 8, 1)


def test_broken_image_names_the_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (8, 8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ConfigError, match=r"cannot read image .*broken\.png"):
        load_image_folder(str(folder), 8, 1)


# --------------------------------------------------------------------- CSV
@pytest.mark.parametrize("content,match", [
    ("a,b\n1,2\n3,\xe94\n".encode("latin-1"), r"is not UTF-8 text \(byte b'\\xe9' at offset"),
    (bytes(range(256)) * 8, "not UTF-8 text|cannot be parsed as CSV"),  # random bytes
    (b"a,b\n1,2\n\"" + b"9" * 200_000 + b"\",4\n", "longer than the csv module's limit"),
    (b"a,b\n1,2\n3,nan\n5,6\n", r"non-finite value 'nan' in line 3, column 'b'"),
    (b"x,y\n1,2\n-inf,4\n5,6\n", r"non-finite value '-inf' in line 3, column 'x'"),
    (b"x,y\n1,2\n3,1e999\n5,6\n", r"non-finite value '1e999' in line 3, column 'y'"),
])
def test_bad_csv_files_are_refused_naming_the_file(tmp_path, content, match):
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as e:
        load_csv(str(path))
    assert "table.csv" in str(e.value)


def test_bad_csv_through_the_cli_is_a_message(tmp_path, capsys):
    path = tmp_path / "table.csv"
    path.write_bytes(b"a,b\n1,2\n\xff\xfe,3\n")
    assert main(["--data", "csv", "--data-path", str(path), "--out-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "table.csv" in err and "UTF-8" in err and "Traceback" not in err


# ----------------------------------------------------------- option combos
def test_batchnorm_generator_needs_two_samples_per_process(tmp_path):
    cfg, _, _ = prepare(tiny(tmp_path, g_norm="batch", batch_size=2))
    with pytest.raises(ConfigError, match="1 sample per process"):
        Trainer(cfg, distributed.Dist(rank=0, world=2))


@pytest.mark.parametrize("blocker", ["out_dir", "run_dir"])
def test_output_folder_that_is_a_file_is_a_message(tmp_path, capsys, blocker):
    target = tmp_path / "out"
    if blocker == "out_dir":
        target.write_text("a file where the runs folder should be")
    else:
        target.mkdir()
        (target / "ring-wgan-gp").write_text("a file where the run folder should be")
    assert main(["--out-dir", str(target), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot use" in err and "run directory" in err and "Traceback" not in err


# -------------------------------------------------------- killed and resumed
def test_killed_run_resumes_past_a_torn_metrics_line_and_stale_temporaries(tmp_path, capsys):
    first = run(tiny(tmp_path, steps=2, log_every=1))
    metrics = os.path.join(first["run_dir"], "metrics.jsonl")
    with open(metrics, "a") as f:
        f.write('{"kind": "train", "step": 3, "loss_d": 0.1')  # the kill landed mid-line
    stale = os.path.join(first["run_dir"], "checkpoints", ".last.pt.tmp-4242")
    with open(stale, "wb") as f:
        f.write(b"PK\x03\x04 half a checkpoint")  # a kill during a save
    capsys.readouterr()
    summary = run(tiny(tmp_path, steps=4, log_every=1, resume="last"))
    out, err = capsys.readouterr()
    assert f"resumed from {os.path.join(first['run_dir'], 'checkpoints', 'last.pt')} at step 2" in out
    assert "dropped 1 unreadable line" in err and "removed 1 temporary file" in err
    assert not os.path.exists(stale)
    with open(metrics) as f:
        steps = [r["step"] for r in map(json.loads, f) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4] and summary["steps"] == 4


def test_zero_step_resume_keeps_the_training_time(tmp_path, capsys):
    first = run(tiny(tmp_path, steps=2))
    path = os.path.join(first["run_dir"], "summary.json")
    with open(path) as f:
        before = json.load(f)
    again = run(tiny(tmp_path, steps=2, resume="last"))
    with open(path) as f:
        after = json.load(f)
    assert after["seconds"] == before["seconds"] and after["steps_this_run"] == before["steps_this_run"] == 2
    assert again["steps"] == 2 and "nothing to train" in capsys.readouterr().out


# ------------------------------------------------------------------ output
def test_image_samples_say_which_half_is_real(tmp_path):
    from fastgp.train import plots

    path = tmp_path / "s.png"
    real, fake = torch.full((16, 1, 8, 8), 1.0), torch.full((16, 1, 8, 8), 1.0)  # all white: only captions are dark
    plots.image_picture(str(path), real, fake, nrow=4)
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    dark_rows = np.where((a < 128).any(axis=1))[0]
    assert dark_rows.max() < 18  # dark pixels only in the caption band above the grids
    left, right = a[:18, :a.shape[1] // 2], a[:18, a.shape[1] // 2:]
    assert (left < 128).any() and (right < 128).any()
    assert (left < 128).sum() != (right < 128).sum()  # two different captions ("real", "generated")


def test_final_message_lists_every_file_written(tmp_path, capsys):
    summary = run(tiny(tmp_path, steps=4, sample_every=1, ckpt_every=1, keep_ckpts=2))
    listing = capsys.readouterr().out.split("files written: ")[1].splitlines()[0]
    on_disk = sorted(os.path.relpath(os.path.join(r, n), summary["run_dir"])
                     for r, _, names in os.walk(summary["run_dir"]) for n in names)
    listed = []
    for part in listing.split(", "):
        if " ... " in part:  # a long series: first ... last (N files)
            first, rest = part.split(" ... ")
            last, count = rest.split(" (")
            series = [p for p in on_disk if os.path.dirname(p) == os.path.dirname(first)]
            assert series[0] == first and series[-1] == last and len(series) == int(count.split()[0])
            listed += series
        else:
            listed.append(part)
    assert sorted(listed) == on_disk
    assert "samples/step_0000001.png" in on_disk and "checkpoints/step_0000004.pt" in on_disk


def test_stale_temporary_cleanup_keeps_checkpoints(tmp_path):
    """The temporary-file cleanup leaves real checkpoints alone."""
    first = run(tiny(tmp_path, steps=2))
    folder = os.path.join(first["run_dir"], "checkpoints")
    assert checkpoint.remove_stale_temporaries(folder) == []
    assert sorted(os.listdir(folder)) == ["last.pt", "step_0000002.pt"]
