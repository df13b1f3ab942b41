"""The offline image-quality evaluator (fastgp/train/evaluator.py) and the Fréchet distance (fastgp/train/frechet.py).

The digits evaluator is fitted once per module on a seeded, random 1400 of scikit-learn's 1797 digits, so that the
other 397 are real digits the classifier never saw: they stand in for a perfect generator.
"""

import importlib.util
import json
import math

import pytest
import torch

from fastgp.train import evaluator as ev_mod
from fastgp.train.evaluator import ImageEvaluator, describe
from fastgp.train.frechet import (INCEPTION_WEIGHTS_ENV, feature_moments, fid_status, frechet_distance,
                                  frechet_distance_from_moments)
from train_helpers import fake_torch_fidelity

EPS = torch.finfo(torch.float64).eps


def _digits():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    return torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8 - 1, torch.as_tensor(d.target)


@pytest.fixture(scope="module")
def digits():
    x, y = _digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    fit, unseen = perm[:1400], perm[1400:]
    return x[fit], y[fit], x[unseen], y[unseen]


@pytest.fixture(scope="module")
def evaluator(digits):
    x, y, _, _ = digits
    return ImageEvaluator.fit(x, y, seed=0, cache_dir=False, fid=False)


# ------------------------------------------------------------------ Fréchet distance
def _spd(d, seed, scale=1.0):
    """A random well-conditioned SPD matrix (eigenvalues in [0.5, 2] * scale) and a random mean."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    w = 0.5 + 1.5 * torch.rand(d, generator=g, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), scale * (q * w) @ q.T


def _tol(*covs, d):
    # eigh and the products are backward stable: errors of a few d * eps relative to the matrices' size; with
    # eigenvalues >= 0.5 * scale no square root is taken near 0, so no amplification (1e3 is the safety factor)
    return 1e3 * d * EPS * sum(float(c.trace()) for c in covs)


def test_fd_one_dimension_closed_form():
    f64 = dict(dtype=torch.float64)
    mu1, mu2, s1, s2 = torch.tensor([0.3], **f64), torch.tensor([-1.2], **f64), torch.tensor([[4.0]], **f64), \
        torch.tensor([[0.25]], **f64)
    expected = (0.3 + 1.2) ** 2 + (2.0 - 0.5) ** 2  # (m1 - m2)^2 + (sigma1 - sigma2)^2
    assert frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_fd_commuting_covariances_closed_form():
    d = 7
    g = torch.Generator().manual_seed(0)
    a, b = 0.1 + torch.rand(d, generator=g, dtype=torch.float64), 0.1 + torch.rand(d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))  # same eigenvectors: S1 S2 = S2 S1
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, abs=_tol(s1, s2, d=d))


@pytest.mark.parametrize("seed", range(5))
def test_fd_non_commuting_2x2_closed_form(seed):
    # for a 2x2 matrix M with eigenvalues l1, l2 >= 0: tr M^(1/2) = sqrt(l1) + sqrt(l2) = sqrt(tr M + 2 sqrt(det M))
    mu1, s1 = _spd(2, seed)
    mu2, s2 = _spd(2, seed + 100, scale=3.0)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    m = s1 @ s2
    tr_sqrt = math.sqrt(float(m.trace()) + 2 * math.sqrt(float(torch.linalg.det(m))))
    expected = float((mu1 - mu2).square().sum() + s1.trace() + s2.trace()) - 2 * tr_sqrt
    assert frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, abs=_tol(s1, s2, d=2))


def test_fd_matches_scipy_sqrtm_in_higher_dimension():
    linalg = pytest.importorskip("scipy.linalg")
    d = 12
    mu1, s1 = _spd(d, 1)
    mu2, s2 = _spd(d, 2, scale=2.0)
    tr_sqrt = float(linalg.sqrtm((s1 @ s2).numpy()).real.trace())
    expected = float((mu1 - mu2).square().sum() + s1.trace() + s2.trace()) - 2 * tr_sqrt
    assert frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, abs=_tol(s1, s2, d=d))


@pytest.mark.parametrize("n,d", [(300, 16), (10, 64)])  # full rank, and rank-deficient (N < d) covariance
def test_fd_of_a_set_with_itself_is_zero_up_to_rounding(n, d):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 3 + 1
    s = feature_moments(x)[1]
    # round-off of size ~d*eps*|S|^2 in the eigenvalues of S^(1/2) S S^(1/2) = S^2 moves each square root by at most
    # sqrt(d*eps)*|S|; summed over d eigenvalues and doubled (10x margin)
    tol = 10 * 2 * d * math.sqrt(d * EPS) * float(torch.linalg.matrix_norm(s, 2))
    assert abs(frechet_distance(x, x)) <= tol
    assert abs(frechet_distance(x.float(), x.float())) <= tol  # float32 features are promoted first


def test_fd_from_samples_uses_the_unbiased_moments_and_is_symmetric():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = torch.randn(150, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    fd = frechet_distance(x, y)
    ref = frechet_distance_from_moments(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    scale = float(torch.cov(x.T).trace() + torch.cov(y.T).trace())
    assert fd == pytest.approx(ref, abs=1e3 * 5 * EPS * scale)
    assert fd == pytest.approx(frechet_distance(y, x), abs=1e3 * 5 * EPS * scale)
    assert fd > 0


def test_fd_rejects_bad_input():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(x, torch.full((10, 4), float("nan")))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(x, torch.randn(10, 3))


# ------------------------------------------------------------------ the classifier
def test_classifier_is_accurate_on_held_out_digits(evaluator, digits):
    # this network scored 94-99% held out over the splits and seeds we tried; 90% leaves a wide margin for any
    # split, seed and CPU while still failing a broken classifier (chance is 10%)
    assert evaluator.holdout_accuracy >= 0.90
    assert evaluator.classes.tolist() == list(range(10))
    # the split is stratified: a quarter of each class held out
    assert evaluator.n_holdout == sum(round(0.25 * int(k)) for k in torch.bincount(digits[1]))
    assert evaluator.n_train + evaluator.n_holdout == 1400


def test_fit_is_deterministic_and_independent_of_the_callers_threads(digits):
    x, y, unseen, _ = digits
    threads = torch.get_num_threads()
    fits = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(1234 + n)  # the caller's global RNG state must not matter ...
            before = torch.get_rng_state()
            fits.append(ImageEvaluator.fit(x, y, seed=3, steps=40, cache_dir=False, fid=False))
            assert torch.equal(torch.get_rng_state(), before)  # ... nor be changed
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    a, b = (f._model.state_dict() for f in fits)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(fits[0].features(unseen), fits[1].features(unseen))
    other = ImageEvaluator.fit(x, y, seed=4, steps=40, cache_dir=False, fid=False)
    assert not torch.equal(other.features(unseen), fits[0].features(unseen))  # the seed is used


@pytest.mark.parametrize("size,channels", [(8, 1), (12, 3), (16, 3), (64, 1)])
def test_classifier_shapes_for_image_sizes(size, channels):
    net = ev_mod._Classifier(channels, size, size, 4)
    feats, logits = net(torch.zeros(2, channels, size, size))
    assert feats.shape == (2, ev_mod.FEATURES) and logits.shape == (2, 4)


# ------------------------------------------------------------------ cache
def _small(n=120):
    x, y = _digits()
    return x[:n].clone(), y[:n].clone()


def test_cache_is_hit_on_the_second_fit(tmp_path):
    x, y = _small()
    first = ImageEvaluator.fit(x, y, steps=5, cache_dir=tmp_path, fid=False)
    assert not first.from_cache and first.cache_path and first.cache_path.startswith(str(tmp_path))
    second = ImageEvaluator.fit(x, y, steps=5, cache_dir=tmp_path, fid=False)
    assert second.from_cache and second.cache_path == first.cache_path
    assert torch.equal(first.features(x), second.features(x))
    assert second.holdout_accuracy == first.holdout_accuracy


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ev_mod.default_cache_dir() == str(tmp_path / "fastgp")
    x, y = _small()
    assert ImageEvaluator.fit(x, y, steps=2, fid=False).cache_path.startswith(str(tmp_path / "fastgp"))


def test_cache_key_covers_data_labels_split_seed_and_steps(tmp_path):
    x, y = _small()
    base = ImageEvaluator.fit(x, y, steps=5, cache_dir=tmp_path, fid=False).cache_path
    x2 = x.clone()
    x2[7, 0, 3, 3] += 0.5  # one pixel
    y2 = y.clone()
    y2[0], y2[1] = y[1], y[0]  # two labels swapped
    assert y[0] != y[1]
    variants = [dict(images=x2), dict(labels=y2), dict(holdout_fraction=0.3), dict(seed=1), dict(steps=6)]
    paths = {base}
    for v in variants:
        kw = dict(images=x, labels=y, steps=5, cache_dir=tmp_path, fid=False)
        kw.update(v)
        fitted = ImageEvaluator.fit(kw.pop("images"), kw.pop("labels"), **kw)
        assert not fitted.from_cache, v
        paths.add(fitted.cache_path)
    assert len(paths) == 1 + len(variants)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "weights", "missing_tensor", "other_key"])
def test_corrupt_cache_entry_is_retrained_not_trusted(tmp_path, damage):
    x, y = _small()
    clean = ImageEvaluator.fit(x, y, steps=5, cache_dir=False, fid=False)
    path = ImageEvaluator.fit(x, y, steps=5, cache_dir=tmp_path, fid=False).cache_path
    if damage == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    elif damage == "garbage":
        open(path, "wb").write(b"not a checkpoint")
    elif damage == "weights":  # a loadable file whose weights no longer match their digest
        entry = torch.load(path, weights_only=True)
        entry["state_dict"]["head.bias"] += 1.0
        torch.save(entry, path)
    elif damage == "missing_tensor":  # digest consistent, but load_state_dict fills the model only in part
        entry = torch.load(path, weights_only=True)
        del entry["state_dict"]["head.bias"]
        entry["state_dict"]["head.weight"] += 1.0
        entry["digest"] = ev_mod._state_digest(entry["state_dict"])
        torch.save(entry, path)
    else:  # a valid entry of other data copied under this name
        other = ImageEvaluator.fit(x, (y + 1) % 10, steps=5, cache_dir=tmp_path, fid=False).cache_path
        open(path, "wb").write(open(other, "rb").read())
    with pytest.warns(UserWarning, match="retraining the image evaluator"):
        again = ImageEvaluator.fit(x, y, steps=5, cache_dir=tmp_path, fid=False)
    assert not again.from_cache
    assert torch.equal(again.features(x), clean.features(x))  # retrained from the same seed: the clean weights
    assert ImageEvaluator.fit(x, y, steps=5, cache_dir=tmp_path, fid=False).from_cache  # and rewritten


def test_unwritable_cache_warns_and_still_fits(tmp_path):
    x, y = _small()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not cache"):
        fitted = ImageEvaluator.fit(x, y, steps=2, cache_dir=blocker / "cache", fid=False)
    assert fitted.cache_path is None and not fitted.from_cache


# ------------------------------------------------------------------ metrics
@pytest.fixture(scope="module")
def scores(evaluator, digits):
    _, _, unseen, unseen_y = digits
    n = len(unseen)
    g = torch.Generator().manual_seed(0)
    x_fit, y_fit = digits[0], digits[1]
    garbage = {
        "uniform noise": torch.rand(n, 1, 8, 8, generator=g) * 2 - 1,
        "one repeated image": unseen[:1].expand(n, -1, -1, -1),
        "one class only": x_fit[y_fit == 3][:n],
        "blank": torch.full((n, 1, 8, 8), -1.0),
    }
    return evaluator.evaluate(unseen, unseen_y), {k: evaluator.evaluate(v) for k, v in garbage.items()}


def test_real_unseen_digits_score_like_real_data(evaluator, scores):
    real, _ = scores
    assert real["coverage"] == real["classes"] == 10
    # KL: the classifier's errors (a few %) barely move a 10-bin histogram; the garbage below is at >= 0.3
    assert real["kl"] < 0.05
    # FD of real unseen digits vs the real-vs-real baseline at the same sample size: both are noisy estimates at
    # ~400 images (ratios of 0.5-2.2 over the splits we tried); 4x still separates them from every garbage set
    assert real["fd_samples"] == 397 and real["fd"] <= 4 * real["fd_baseline"]
    assert real["classifier_accuracy"] == evaluator.holdout_accuracy


def test_garbage_scores_worse_than_real(scores):
    real, garbage = scores
    for name, m in garbage.items():
        assert m["kl"] > real["kl"], name
        assert m["fd"] > 10 * real["fd"] and m["fd"] > 10 * m["fd_baseline"], name
    for name in ("one repeated image", "one class only", "blank"):  # a single mode: one class at most
        assert garbage[name]["coverage"] <= 1, name
    # uniform noise is not a single mode: a classifier may call some of it digits with confidence (as Inception
    # does with ImageNet classes); its coverage is not asserted -- FD and KL are the numbers that catch it


@pytest.mark.parametrize("kind", ["unseen digits", "digits and noise"])
def test_kl_and_coverage_follow_their_definitions(evaluator, digits, kind):
    _, y, unseen, _ = digits
    if kind == "digits and noise":  # confidences spread over [0, 1]: the 0.9 threshold matters
        noise = torch.rand(600, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
        unseen = torch.cat([unseen[:60], noise])
    probs = evaluator.predict(unseen)
    m = evaluator.evaluate(unseen)
    n = len(unseen)
    conf, top = probs.max(1)
    q = torch.bincount(top, minlength=10).double() / n
    p = torch.bincount(y, minlength=10).double() / len(y)  # the real class frequencies
    kl = sum(float(qc * math.log(qc / pc)) for qc, pc in zip(q, p) if qc > 0)
    assert m["kl"] == pytest.approx(kl, rel=1e-9, abs=1e-15)
    confident = torch.bincount(top[conf >= 0.9], minlength=10)
    assert m["coverage"] == int(((confident >= 0.01 * n) & (confident > 0)).sum())
    assert m["confident_fraction"] == pytest.approx(float((conf >= 0.9).double().mean()))
    assert m["samples"] == n and m["classes"] == 10


def test_coverage_threshold_is_one_percent_of_the_samples(evaluator, digits):
    x, y, _, _ = digits
    probs = evaluator.predict(x)
    conf, top = probs.max(1)
    sure = (conf >= 0.9) & (top == y)
    zeros, ones = x[sure & (y == 0)], x[sure & (y == 1)]
    assert len(zeros) >= 100 and len(ones) >= 2
    # one "1" among 100 samples is exactly 1%: covered; among 101 it is less: not covered; two among 101: covered
    assert evaluator.evaluate(torch.cat([zeros[:99], ones[:1]]))["coverage"] == 2
    assert evaluator.evaluate(torch.cat([zeros[:100], ones[:1]]))["coverage"] == 1
    assert evaluator.evaluate(torch.cat([zeros[:99], ones[:2]]))["coverage"] == 2


def test_fd_baseline_uses_the_same_sample_size(evaluator, digits):
    x, _, unseen, _ = digits
    small = evaluator.evaluate(unseen[:100])
    assert small["fd_samples"] == 100
    assert small["fd_baseline"] == evaluator.baseline(100)["fd"]
    big = evaluator.evaluate(torch.cat([x, unseen]))  # more images than the training split holds
    assert big["fd_samples"] == evaluator.n_train == evaluator.baseline(10 ** 6)["fd_samples"]
    assert big["fd_baseline"] == evaluator.baseline(evaluator.n_train)["fd"]
    # smaller samples bias FD upwards: the baseline at 100 images is above the one at the whole training split
    assert evaluator.baseline(100)["fd"] > evaluator.baseline(evaluator.n_train)["fd"]


def test_per_class_accuracy_with_labels(evaluator, digits, scores):
    _, _, unseen, unseen_y = digits
    real, _ = scores
    per_class = [real[f"class_accuracy_{c}"] for c in range(10)]
    assert real["class_accuracy_mean"] == pytest.approx(sum(per_class) / 10)
    assert real["class_accuracy_mean"] >= 0.90  # the same bar as the classifier: these are real unseen digits
    wrong = evaluator.evaluate(unseen, (unseen_y + 1) % 10)
    # relabelled c -> c+1, a hit is a digit c classified as c+1: at most the error rate on class c
    for c in range(10):
        assert wrong[f"class_accuracy_{(c + 1) % 10}"] <= 1 - real[f"class_accuracy_{c}"] + 1e-12
    assert wrong["class_accuracy_mean"] <= 1 - real["class_accuracy_mean"] + 1e-12
    two = evaluator.evaluate(unseen[:40], torch.where(unseen_y[:40] % 2 == 0, 2, 5))
    assert sorted(k for k in two if k.startswith("class_accuracy_")) == [
        "class_accuracy_2", "class_accuracy_5", "class_accuracy_mean"]  # only the classes asked for
    with pytest.raises(ValueError, match="outside the real classes"):
        evaluator.evaluate(unseen[:4], torch.tensor([0, 1, 2, 11]))
    with pytest.raises(ValueError, match="labels"):
        evaluator.evaluate(unseen[:4], torch.tensor([0, 1, 2]))


def test_metrics_are_flat_json_numbers_and_describe_reads_them(scores, digits, evaluator):
    real, garbage = scores
    for m in (real, *garbage.values()):
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in m.values())
        json.dumps(m, allow_nan=False)
    text = describe(real)
    assert len(text.splitlines()) == 2  # with labels: the conditional accuracy on a second line
    assert "10/10 classes" in text and f"{real['fd']:.3g}" in text and f"{real['fd_baseline']:.3g}" in text
    assert "conditional accuracy" in text
    one = describe(garbage["uniform noise"])
    assert len(one.splitlines()) == 1 and f"KL {garbage['uniform noise']['kl']:.3f}" in one


def test_bad_generated_images_are_refused(evaluator):
    with pytest.raises(ValueError, match="generated_images must have shape"):
        evaluator.evaluate(torch.zeros(10, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        evaluator.evaluate(torch.full((10, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="at least 2"):
        evaluator.evaluate(torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="generated_images"):
        evaluator.evaluate([[0.0]])


# ------------------------------------------------------------------ no metric, with a reason
def test_unlabelled_or_unsplittable_data_gets_no_evaluator_and_a_reason():
    x, y = _small()
    for labels, words in [(None, "no class labels"), (torch.zeros(len(x), dtype=torch.long), "single class"),
                          (torch.cat([torch.tensor([9]), torch.zeros(len(x) - 1, dtype=torch.long)]),
                           "single image")]:
        fitted, reason = ImageEvaluator.try_fit(x, labels, cache_dir=False)
        assert fitted is None and words in reason
        assert ImageEvaluator.unavailable_reason(x, labels) == reason
        with pytest.raises(ValueError, match=words):
            ImageEvaluator.fit(x, labels, cache_dir=False)
    fitted, reason = ImageEvaluator.try_fit(x, y, steps=2, cache_dir=False, fid=False)
    assert isinstance(fitted, ImageEvaluator) and reason is None


def test_malformed_fit_arguments_raise_naming_them():
    x, y = _small()
    cases = [((x[:, 0], y), {}, "images"), ((x, y[:-1]), {}, "labels"), ((x, y.float()), {}, "labels"),
             ((x, ["a"] * len(x)), {}, "labels"), ((x[:, :, :4, :4], y), {}, "H, W >= 8"),
             ((x, y), {"holdout_fraction": 1.0}, "holdout_fraction"), ((x, y), {"steps": 0}, "steps"),
             ((x, y), {"seed": 1.5}, "seed")]
    for args, kw, words in cases:
        with pytest.raises((ValueError, TypeError), match=words):
            ImageEvaluator.fit(*args, cache_dir=False, **kw)


# ------------------------------------------------------------------ optional FID
def test_fid_status_says_why_not_when_no_library_is_installed(monkeypatch):
    real_find_spec = importlib.util.find_spec
    absent = ("torch_fidelity", "torchmetrics")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name in absent else real_find_spec(name, *a))
    reason = fid_status()
    assert reason.startswith("FID not computed") and "torch-fidelity" in reason
    fitted = ImageEvaluator.fit(*_small(), steps=2, cache_dir=False)
    assert fitted.fid_reason == reason and "fid" not in fitted.evaluate(_small()[0])
    monkeypatch.setattr("importlib.util.find_spec",  # torchmetrics without its [image] extra
                        lambda name, *a: object() if name == "torchmetrics" else
                        None if name == "torch_fidelity" else real_find_spec(name, *a))
    assert "torchmetrics[image]" in fid_status()


def test_fid_wiring_with_a_mocked_torch_fidelity(monkeypatch, tmp_path):
    built, fake = fake_torch_fidelity(monkeypatch)
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    missing = fid_status()
    assert str(tmp_path / "hub" / "checkpoints") in missing and "nothing is downloaded" in missing
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(weights))
    assert fid_status() is None
    x, y = _small()
    fitted = ImageEvaluator.fit(x, y, steps=2, cache_dir=False)
    assert fitted.fid_reason is None
    generated = x[:50].flip(-1)
    m = fitted.evaluate(generated)
    assert built == [str(weights)]
    held_out = x[ev_mod._stratified_split(y, 10, 0.25, 0)[1]]
    to_u8 = lambda t: ((t.expand(-1, 3, -1, -1) + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
    net = fake("x", ["2048"], feature_extractor_weights_path="unused")
    expected = frechet_distance(net(to_u8(generated))[0].double(), net(to_u8(held_out))[0].double())
    assert m["fid"] == pytest.approx(expected, rel=1e-9)
    assert "FID" in describe(m)
    assert "fid" not in fitted.evaluate(generated, fid=False)  # the trainer's periodic evaluations on a CPU
    assert "fid" not in ImageEvaluator.fit(x, y, steps=2, cache_dir=False, fid=False).evaluate(generated)


def test_fid_refuses_a_torch_fidelity_that_would_download(monkeypatch, tmp_path):
    fake_torch_fidelity(monkeypatch, with_weights_arg=False)
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    assert "upgrade torch-fidelity" in fid_status(str(weights))
