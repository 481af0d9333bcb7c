"""gradbench compare on synthetic rows: factor and significance, what is skipped, exit codes."""

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from gradbench import store
from gradbench.cli import app
from gradbench.errors import UserError
from gradbench.reports.compare import compare, direction
from gradbench.reports.frame import interval_stderr, pool

from rows import estimator_fields, frame, row

runner = CliRunner()


def cmp(base_rows, cur_rows, **kw):
    return compare(frame(base_rows), frame(cur_rows), **kw)


def verdicts(result):
    return dict(zip(result.rows["metric"], result.rows["verdict"]))


def test_stored_intervals_give_back_their_standard_errors():
    df = frame([row("variance", 2.0, se=0.1), row("mse", 2.0, se=0.05), row("bias_norm", 0.3, se=0.02),
                row("bias_norm", 0.01, se=0.02)])
    se, dof = interval_stderr(df)
    assert se == pytest.approx([0.1, 0.05, 0.02, 0.02])
    assert list(dof) == [19, 9999, math.inf, math.inf]


def test_identical_rows_compare_identical_and_exit_0():
    rows = [row("variance", 2.0, se=0.1), row("bias_norm", 0.3, se=0.02), row("mse", 2.1, se=0.1)]
    result = cmp(rows, rows)
    assert set(result.rows["verdict"]) == {"identical"} and result.exit_code == 0


def test_regression_needs_both_the_factor_and_significance():
    base = [row("variance", 1.0, se=0.01)]
    assert verdicts(cmp(base, [row("variance", 1.5, se=0.015)])) == {"variance": "regression"}
    # Significant but only 1.1x: reported as worse, not a regression.
    assert verdicts(cmp(base, [row("variance", 1.1, se=0.011)])) == {"variance": "worse"}
    # 1.5x but within noise (relative se 40%): no alarm.
    noisy = [row("variance", 1.0, se=0.4)]
    assert verdicts(cmp(noisy, [row("variance", 1.5, se=0.6)])) == {"variance": "same"}
    assert verdicts(cmp([row("variance", 1.5, se=0.015)], base)) == {"variance": "improvement"}
    assert cmp(base, [row("variance", 1.5, se=0.015)], max_ratio=2.0).exit_code == 0


def test_log_ratio_test_matches_a_hand_computation():
    # z = log(1.3)/sqrt(2·0.05²) = 3.71; one-sided t with Welch dof 38: p ≈ 3.3e-4.
    result = cmp([row("variance", 1.0, se=0.05)], [row("variance", 1.3, se=0.065)])
    from scipy import stats

    z = math.log(1.3) / math.sqrt(2 * 0.05**2)
    assert result.rows["p"].iloc[0] == pytest.approx(stats.t.sf(z, 38), rel=1e-6)
    assert result.rows["ratio"].iloc[0] == pytest.approx(1.3)


def test_bias_test_uses_the_noise_floors():
    # Both at the noise floor (an unbiased estimator): a 2x ratio of norms is not significant.
    base, cur = [row("bias_norm", 0.01, se=0.01)], [row("bias_norm", 0.02, se=0.01)]
    assert verdicts(cmp(base, cur)) == {"bias_norm": "same"}
    # A bias far above both floors that doubled is a regression; p = 2(1 − Φ(z)).
    result = cmp([row("bias_norm", 0.1, se=0.005)], [row("bias_norm", 0.2, se=0.005)])
    assert verdicts(result) == {"bias_norm": "regression"}
    from scipy import stats

    assert result.rows["p"].iloc[0] == pytest.approx(2 * stats.norm.sf(0.1 / math.sqrt(2 * 0.005**2)))


def test_variances_at_the_rounding_floor_are_not_tested():
    # Σ‖g‖² − ‖Σg‖²/S cancels to ~ε·‖reference‖² (float64: ε = 2.2e-16): a 2x change of an
    # exact estimator's rounding noise, however "significant", is no regression.
    ref = [row("reference_norm", 1e-3)]
    base, cur = [row("variance", 4e-22, se=1e-24), *ref], [row("variance", 8e-22, se=1e-24), *ref]
    assert verdicts(cmp(base, cur)) == {"variance": "at rounding floor"}
    assert cmp(base, cur).exit_code == 0
    # A variance above the floor on one side is tested as usual.
    above = [row("variance", 1e-12, se=1e-15), *ref]
    assert verdicts(cmp(base, above)) == {"variance": "regression"}


def test_holm_correction_over_many_keys():
    # One key 1.5x worse at z = 2.9: significant alone (p = 0.002 < 0.01), not among 40 re-measured
    # keys (Holm: 0.08). Keys whose values are identical cannot alarm and do not count.
    base = [row("variance", 1.0, se=0.1, **estimator_fields("gst", tau=t)) for t in range(1, 41)]
    cur = [row("variance", 1.0 + 1e-3 * t, se=0.1, **estimator_fields("gst", tau=t)) for t in range(1, 41)]
    cur[0] = row("variance", 1.5, se=0.1, **estimator_fields("gst", tau=1))
    assert cmp(base[:1], cur[:1]).exit_code == 1
    result = cmp(base, cur)
    assert result.exit_code == 0 and result.rows["p"].min() > 0.01


def test_mismatched_versions_devices_dtypes_and_one_sided_keys_are_skipped():
    base = [row("variance", 1.0, se=0.01, **estimator_fields("gst")),
            row("variance", 1.0, se=0.01, **estimator_fields("stgs")),
            row("variance", 1.0, se=0.01, **estimator_fields("rloo")),
            row("variance", 1.0, se=0.01, **estimator_fields("reinforce")),
            row("variance", 1.0, se=0.01, **estimator_fields("gr-mc"))]
    cur = [row("variance", 9.0, se=0.01, estimator_version=2, **estimator_fields("gst")),
           row("variance", 9.0, se=0.01, device="cuda:0", **estimator_fields("stgs")),
           row("variance", 9.0, se=0.01, dtype="float32", **estimator_fields("rloo")),
           row("variance", 1.0, se=0.01, **estimator_fields("reinforce")),
           row("variance", 1.0, se=0.01, **estimator_fields("gst(tau=0.5)", tau=0.5))]
    result = cmp(base, cur)
    assert result.exit_code == 0 and list(result.rows["estimator_label"]) == ["reinforce"]
    reasons = dict(zip(result.skipped["estimator_label"], result.skipped["reason"]))
    assert reasons == {"gst": "different estimator version 1 → 2", "stgs": "different device cpu → cuda:0",
                       "rloo": "different dtype float64 → float32", "gr-mc": "only in baseline",
                       "gst(tau=0.5)": "only in current"}
    with pytest.raises(UserError, match="nothing to compare"):
        cmp(base[:1], cur[:1])


def test_a_measurement_that_now_fails_is_a_regression():
    base = [row("variance", 1.0, se=0.01)]
    cur = [row("failed", math.nan, status="failed", message="3 of 10000 estimates were not finite")]
    result = cmp(base, cur)
    assert result.exit_code == 1 and verdicts(result)["status"] == "now failing"
    assert verdicts(cmp(cur, base))["status"] == "now ok" and cmp(cur, base).exit_code == 0


def test_timing_is_left_out_unless_asked_for_with_its_own_factor():
    base = [row("variance", 1.0, se=0.01), row("seconds_per_estimate", 1e-5, se=1e-8)]
    cur = [row("variance", 1.0, se=0.01), row("seconds_per_estimate", 2e-5, se=1e-8)]
    assert set(cmp(base, cur).rows["metric"]) == {"variance"}
    assert verdicts(cmp(base, cur, timing_ratio=3.0))["seconds_per_estimate"] == "worse"
    assert verdicts(cmp(base, cur, timing_ratio=1.5))["seconds_per_estimate"] == "regression"


def test_training_curves_need_seeds_and_know_their_direction():
    assert direction("test/neg_elbo") == 1 and direction("valid/accuracy") == -1 and direction("test/iwae") == 0

    def curves(metric, values):
        return [row(metric, v, seed=s, run_id=f"r{s}", param_group="", step=40, n_estimates=0)
                for s, v in enumerate(values)]

    one = cmp(curves("test/neg_elbo", [100.0]), curves("test/neg_elbo", [140.0]))
    assert verdicts(one) == {"test/neg_elbo": "untested"} and one.exit_code == 0
    worse = cmp(curves("test/neg_elbo", [100, 101, 99, 100.5]), curves("test/neg_elbo", [140, 141, 139, 142]))
    assert verdicts(worse) == {"test/neg_elbo": "regression"}
    acc = cmp(curves("valid/accuracy", [0.66, 0.65, 0.67]), curves("valid/accuracy", [0.40, 0.41, 0.39]))
    assert verdicts(acc) == {"valid/accuracy": "regression"}
    assert cmp(curves("valid/accuracy", [0.40, 0.41, 0.39]), curves("valid/accuracy", [0.66, 0.65, 0.67])
               ).exit_code == 0


def test_stateful_estimators_compare_only_same_seeds_or_seed_spreads():
    ema = dict(warmup=1000, estimator="reinforce-ema", estimator_params='{"decay": 0.9}',
               estimator_label="reinforce-ema")
    base = [row("variance", 1.0, se=0.01, seed=0, **ema)]
    assert verdicts(cmp(base, [row("variance", 1.5, se=0.01, seed=1, **ema)])) == {"variance": "untested"}
    assert verdicts(cmp(base, [row("variance", 1.5, se=0.01, seed=0, **ema)])) == {"variance": "regression"}


def test_pooling_combines_runs_of_a_fixed_task_and_spreads_seeds_of_a_training_task():
    fixed = frame([row("variance", v, se=0.1, seed=s, run_id=f"r{s}") for s, v in enumerate([1.0, 1.2])])
    p = pool(fixed, ["metric"]).iloc[0]
    assert p["method"] == "interval" and p["value"] == pytest.approx(1.1) and p["se"] == pytest.approx(0.1 / 2**0.5)
    training = frame([row("variance", v, se=0.1, seed=s, run_id=f"r{s}", step=3) for s, v in enumerate([1.0, 1.2])])
    p = pool(training, ["metric"]).iloc[0]
    assert p["method"] == "seeds" and p["se"] == pytest.approx(pd.Series([1.0, 1.2]).std() / 2**0.5)


def write(path, rows):
    path.mkdir(parents=True)
    store.write_metrics(path, rows)
    return path


def test_cli_exit_codes_table_and_csv(tmp_path):
    base = write(tmp_path / "base" / "run", [row("variance", 1.0, se=0.01), row("mse", 1.0, se=0.01)])
    same = write(tmp_path / "same" / "run", [row("variance", 1.0, se=0.01), row("mse", 1.0, se=0.01)])
    worse = write(tmp_path / "worse" / "run", [row("variance", 1.5, se=0.015), row("mse", 1.0, se=0.01)])
    ok = runner.invoke(app, ["compare", str(base), str(same)])
    assert ok.exit_code == 0 and "no metric changed" in ok.output and "2 identical" in ok.output
    bad = runner.invoke(app, ["compare", str(tmp_path / "base"), str(worse / "metrics.parquet"),
                              "--csv", str(tmp_path / "c.csv")])
    assert bad.exit_code == 1 and "regression" in bad.output and "1.5" in bad.output
    table = pd.read_csv(tmp_path / "c.csv")
    assert dict(zip(table["metric"], table["verdict"])) == {"mse": "identical", "variance": "regression"}
    missing = runner.invoke(app, ["compare", str(base), str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and missing.output.startswith("error: no results at")
    for args, message in ((["--max-ratio", "0.5"], "--max-ratio"), (["--alpha", "2"], "--alpha")):
        r = runner.invoke(app, ["compare", str(base), str(same), *args])
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1
