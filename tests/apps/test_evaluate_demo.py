"""`moce evaluate` and `moce demo` on the bundled samples (tiny golden model: numbers are not
quality claims here, only that the pipeline measures what it says)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from moce.apps.evaluate import PALETTE, EvalOptions, _fit_predict, evaluate, routing_grid, score_summary
from moce.cli.main import app
from moce.data.degrade import DEGRADATIONS, IDENTITY, degrade
from moce.errors import InputError


def test_degradations_are_reproducible_and_change_the_image():
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    for name in DEGRADATIONS:
        a, b = degrade(img, name, 7), degrade(img, name, 7)
        assert np.array_equal(a, b), name
        assert np.array_equal(a, img) if name == IDENTITY else not np.allclose(a, img, atol=1e-3), name
        assert a.min() >= 0 and a.max() <= 1


def test_wide_haze_spans_light_to_dense_under_grey_and_tinted_airlight():
    black = np.zeros((32, 32, 3), np.float32)
    for name in ("haze-depth", "haze-uniform"):
        veils = np.array([degrade(black, name, seed).mean((0, 1)) for seed in range(200)])  # A (1 - t) per channel
        assert veils.mean(1).min() < 0.2 and veils.mean(1).max() > 0.65, name  # light and dense
        tint = veils.max(1) / veils.min(1)
        assert tint.min() < 1.01 and tint.max() > 1.1, name  # grey and tinted airlights
    uniform = degrade(black, "haze-uniform", 3)
    assert np.ptp(uniform[..., 0]) == 0  # one transmission over the whole image: no depth


def test_continuous_noise_draws_its_level_between_the_fixed_ones():
    flat = np.full((64, 64, 3), 0.5, np.float32)
    sigmas = np.array([255 * (degrade(flat, "noise", seed) - flat).std() for seed in range(100)])
    assert 5 <= sigmas.min() < 12 and 48 < sigmas.max() <= 56 and len(np.unique(sigmas.round(1))) > 50


def test_evaluate_refuses_clean_as_a_degradation_before_loading_anything(tmp_path):
    with pytest.raises(InputError, match="clean row"):
        evaluate(tmp_path / "missing.moce", tmp_path, EvalOptions(("noise25", IDENTITY)))


def test_route_lookup_predicts_from_seen_and_nearest_routes():
    train = [((0, 1, 2), "noise"), ((0, 1, 2), "noise"), ((3, 3, 3), "haze"), ((0, 1, 2), "rain")]
    assert _fit_predict(train, [((0, 1, 2), "x"), ((3, 3, 2), "x")]) == ["noise", "haze"]


def test_evaluate_reports_every_degradation(tmp_path, tiny_pkg):
    from moce.data import SAMPLES

    report = evaluate(
        tiny_pkg.root, SAMPLES / "clean", EvalOptions(("noise25", "haze"), crops_per_image=4, crop=64, draws=1)
    )
    assert [r["degradation"] for r in report.rows] == ["noise25", "haze"]
    for row in report.rows:
        assert row["psnr_input"] < 40 and np.isfinite(row["psnr_output"])
    assert 0.0 <= report.route_accuracy <= 1.0
    assert sum(sum(v.values()) for v in report.confusion.values()) == 2 * 2 * 4 // 2  # half the crops are held out
    assert all(np.isclose(sum(adapter), 1.0) for usage in report.route_usage.values() for adapter in usage)
    clean = report.clean  # the harm done to photos that need nothing
    assert 0 < clean["psnr_lowest"] <= clean["psnr_output"] and clean["saturation_ratio_worst"] > 0
    assert clean["psnr_lowest_image"] in {p.stem for p in (SAMPLES / "clean").glob("*.png")}


def test_demo_writes_outputs_report_sheet_and_routing_chart(tmp_path, tiny_pkg):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--output", str(out), "--model", str(tiny_pkg.root), "--backend", "onnxruntime"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["ok"] == 10 and report["totals"]["errors"] == 0
    assert len(list((out / "restored").glob("*.png"))) == 10
    import cv2

    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 10 * 100
    assert cv2.imread(str(out / "routing.png")) is not None
    again = CliRunner().invoke(app, ["demo", "--output", str(out), "--model", str(tiny_pkg.root)])
    assert again.exit_code == 0, again.output  # its own folder: a rerun replaces what it wrote
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "sheet.png").write_bytes(b"the user's")
    refused = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "mine"), "--model", str(tiny_pkg.root)])
    assert refused.exit_code == 2 and "holds files that moce did not write" in refused.output
    assert (tmp_path / "mine" / "sheet.png").read_bytes() == b"the user's"


def test_the_routing_chart_shows_each_experts_share_in_its_colour():
    usage = {"noise": [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]], "haze": [[0.0, 0.0, 0.25, 0.75], [0, 0, 1, 0]]}
    img = routing_grid(usage, "t")
    colours = {tuple(int(c) for c in px) for px in img.reshape(-1, 3)}
    assert all(tuple(p) in colours for p in PALETTE)  # every expert taken somewhere is drawn in its colour
    noise_half = img[62 + 10, :, :]  # the noise row: adapter 1 half expert 0, half expert 1
    assert sum(tuple(px) == PALETTE[0] for px in noise_half) > sum(tuple(px) == PALETTE[1] for px in noise_half) > 20


def test_several_draws_average_what_single_draws_at_successive_seeds_give(tiny_pkg):
    from moce.data import SAMPLES

    one = lambda seed, draws: evaluate(
        tiny_pkg.root,
        SAMPLES / "clean",  # noqa: E731
        EvalOptions(("blur",), crops_per_image=2, crop=64, seed=seed, draws=draws),
    ).rows[0]
    first, second, both = one(0, 1), one(1, 1), one(0, 2)
    assert both["psnr_input"] == pytest.approx((first["psnr_input"] + second["psnr_input"]) / 2)
    assert both["psnr_gain"] == pytest.approx((first["psnr_gain"] + second["psnr_gain"]) / 2)
    assert both["psnr_gain_min"] == pytest.approx(min(first["psnr_gain"], second["psnr_gain"]))
    assert both["psnr_gain_max"] == pytest.approx(max(first["psnr_gain"], second["psnr_gain"]))
    assert both["psnr_gain_per_draw"] == pytest.approx([first["psnr_gain"], second["psnr_gain"]])
    assert first["psnr_input"] != second["psnr_input"]  # another kernel per draw


def test_evaluate_command_prints_the_range_over_draws_and_writes_json(tmp_path, tiny_pkg):
    from moce.data import SAMPLES

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--data",
            str(SAMPLES / "clean"),
            "--model",
            str(tiny_pkg.root),
            "--degradations",
            "noise25,blur",
            "--crops",
            "2",
            "--crop",
            "64",
            "--draws",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "clean inputs, restored as they are: " in result.output
    assert "gain over draws" in result.output and "task predicted from the route vector alone" in result.output
    rows = json.loads(out.read_text())["per_degradation"]
    assert [r["degradation"] for r in rows] == ["noise25", "blur"] and all(r["draws"] == 2 for r in rows)
    assert all(
        r["psnr_gain_min"] - 1e-9 <= r["psnr_gain"] <= r["psnr_gain_max"] + 1e-9 for r in rows
    )  # mean of the draws


def test_score_summary_names_the_least_gaining_photo_and_the_farthest_saturation():
    # (draw, image, SCORES): psnr_in, psnr_out, ssim_in, ssim_out, sat_clean, sat_in, sat_out, de_in, de_out
    scores = np.array(
        [
            [[20, 30, 0.5, 0.8, 0.40, 0.30, 0.38, 9, 3], [25, 24, 0.5, 0.6, 0.20, 0.20, 0.10, 5, 6]],
            [[20, 28, 0.5, 0.8, 0.40, 0.30, 0.42, 9, 3], [25, 23, 0.5, 0.6, 0.20, 0.20, 0.12, 5, 6]],
        ],
        dtype=float,
    )
    row = score_summary(scores, ["sunny", "grass"])
    assert row["worst_image"] == "grass" and row["worst_image_gain"] == pytest.approx(-1.5)
    assert row["psnr_gain"] == pytest.approx((10 - 1 + 8 - 2) / 4)
    assert row["psnr_gain_min"] == pytest.approx(3.0) and row["psnr_gain_max"] == pytest.approx(4.5)
    assert row["saturation_ratio"] == pytest.approx(0.255 / 0.30)
    assert row["saturation_ratio_worst_image"] == "grass" and row["saturation_ratio_worst"] == pytest.approx(0.55)
    assert row["ciede2000_input"] == pytest.approx(7) and row["ciede2000_output"] == pytest.approx(4.5)


def test_evaluate_reads_several_folders_and_charts_gain_colour_and_routes(tmp_path, tiny_pkg):
    from moce.data import SAMPLES

    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    (one / "chelsea.png").write_bytes((SAMPLES / "clean" / "chelsea.png").read_bytes())
    (two / "coffee.png").write_bytes((SAMPLES / "clean" / "coffee.png").read_bytes())
    chart, out = tmp_path / "eval.png", tmp_path / "eval.json"
    args = ["evaluate", "--data", str(one), "--data", str(two), "--model", str(tiny_pkg.root)]
    args += ["--degradations", "haze", "--crops", "2", "--crop", "64", "--draws", "1", "--chart", str(chart)]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "saturation / clean" in result.output and "CIEDE2000" in result.output
    (row,) = json.loads(out.read_text())["per_degradation"]
    assert row["worst_image"] in ("chelsea", "coffee") and row["saturation_clean"] > 0.1
    assert row["saturation_input"] < row["saturation_clean"]  # haze washes colours out
    assert row["ciede2000_input"] > 5
    import cv2

    picture = cv2.imread(str(chart))
    assert picture is not None and picture.shape[0] > 300
