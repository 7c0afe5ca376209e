"""Knowledge distillation (``distill.*``): the loss against a hand computation, the teachers'
targets against the teacher's own predictions, the wiring through training and resume."""

import math

import pytest
import torch

from dicc.checkpoint import load_checkpoint, model_from_checkpoint
from dicc.config import load_config
from dicc.data.build import build_run_data
from dicc.distill import CACHE_NAME, BatchTeachers, Distilled, distillation_loss, teacher_log_probs
from dicc.engine import fit
from dicc.inference import predict_parent_logits
from dicc.strategies import create_strategy
from dicc.validate import check_config

from helpers import COUNTS, make_checkpoint, interrupt_after_epoch_1


def test_distillation_loss_matches_a_hand_computation():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    p_t = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    t = 2.0
    want = 0.0
    for i in range(2):
        q = torch.softmax(p_t[i].log() / t, 0)  # the teacher, softened
        r = torch.softmax(s[i] / t, 0)
        want += sum(float(q[k]) * math.log(float(q[k]) / float(r[k])) for k in range(3))
    want = want / 2 * t * t
    assert distillation_loss(s, p_t.log(), t).item() == pytest.approx(want, rel=1e-6)
    # at T = 1 and one-hot-like targets it approaches cross-entropy minus the target entropy (0)
    onehot = torch.tensor([[1 - 2e-9, 1e-9, 1e-9]]).log()
    ce = torch.nn.functional.cross_entropy(s[:1], torch.tensor([0]))
    assert distillation_loss(s[:1], onehot, 1.0).item() == pytest.approx(ce.item(), abs=1e-6)


def test_distilled_mixes_the_method_loss_and_merges_dicc_subclasses():
    counts = [100, 10, 50]
    teacher = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]]).log()
    ce = create_strategy("ce", counts, class_names=["a", "b", "c"])
    d = Distilled(ce, teacher, temperature=3.0, weight=0.25)
    logits = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    idx, y = torch.tensor([2, 0]), torch.tensor([1, 0])
    want = 0.25 * distillation_loss(logits, teacher[idx], 3.0) + 0.75 * ce.loss(logits, y, idx)
    assert d.loss(logits, y, idx).item() == pytest.approx(want.item(), rel=1e-6)
    assert d.name == "ce" and d.num_outputs == 3  # everything else is the wrapped strategy's
    # DICC: the distillation term sees the merged parent logits, the own loss the sub-classes
    dicc = create_strategy("dicc", COUNTS)
    sub = torch.randn(2, dicc.num_outputs, generator=torch.Generator().manual_seed(1))
    t7 = torch.full((3, 7), 1 / 7).log()
    dd = Distilled(dicc, t7, temperature=1.0, weight=1.0)
    assert dd.loss(sub, torch.tensor([3, 0]), idx).item() == pytest.approx(
        distillation_loss(dicc.parent_logits(sub), t7[idx], 1.0).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        Distilled(ce, t7, 1.0, 0.5)


def test_teacher_targets_are_the_teachers_mean_probabilities(tmp_path):
    data = build_run_data(load_config(None, ["data.longtail=[6,3,6,9,6,4,8]", "data.val=null"]).data)
    a = make_checkpoint(tmp_path / "a.pt", seed=0)
    b = make_checkpoint(tmp_path / "b.pt", seed=1, mean=0.4, std=0.3)  # its own normalisation
    got = teacher_log_probs([str(a), str(b)], data.train, tta="flip")
    want = 0
    for path, (mean, std) in ((a, (0.5, 0.25)), (b, (0.4, 0.3))):
        model, strategy = model_from_checkpoint(load_checkpoint(path))
        z = predict_parent_logits(model, strategy, data.train, mean=mean, std=std, tta="flip")
        want = want + z.softmax(1) / 2
    assert got.shape == (len(data.train), 7)
    assert torch.allclose(got.exp(), want, atol=1e-6)
    assert torch.allclose(got.exp().sum(1), torch.ones(len(data.train)), atol=1e-5)
    # a teacher's post-hoc logit adjustment is a decision rule, not part of its probabilities
    adjusted = load_checkpoint(a)
    adjusted["config"] = {"eval": {"logit_adjust": 1.0}}
    torch.save({k: v for k, v in adjusted.items() if k != "_path"}, tmp_path / "tau.pt")
    assert torch.equal(
        teacher_log_probs([str(tmp_path / "tau.pt")], data.train), teacher_log_probs([str(a)], data.train)
    )


def test_a_teacher_of_other_classes_or_sizes_is_refused_by_name(tmp_path):
    data = build_run_data(load_config(None, ["data.longtail=[6,3,6,9,6,4,8]", "data.val=null"]).data)
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "t.pt"))
    ckpt["class_names"] = list(reversed(ckpt["class_names"]))
    torch.save({k: v for k, v in ckpt.items() if k != "_path"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: predicts neutral, surprise"):
        teacher_log_probs([str(tmp_path / "other.pt")], data.train)
    ckpt["class_names"] = list(reversed(ckpt["class_names"]))
    ckpt["normalization"]["image_size"] = 64
    torch.save({k: v for k, v in ckpt.items() if k != "_path"}, tmp_path / "big.pt")
    with pytest.raises(ValueError, match=r"big\.pt: takes 1x64x64 images"):
        teacher_log_probs([str(tmp_path / "big.pt")], data.train)


@pytest.mark.parametrize(
    "override, message",
    [
        ("distill.teacher=nope.pt", "distill.teacher: nope.pt: no such checkpoint"),
        ("distill.temperature=0", "distill.temperature: expected a number > 0"),
        ("distill.weight=1.5", "distill.weight: expected a number >= 0 and <= 1"),
        ("distill.tta=ten", "distill.tta: unknown test-time augmentation 'ten'"),
        ("distill.targets=views", "distill.targets: expected images or augmented, got 'views'"),
    ],
)
def test_bad_distill_settings_are_one_line_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        check_config(load_config(None, [override]))


def test_training_with_a_teacher_uses_its_targets_and_resumes_exactly(tiny_config, monkeypatch, tmp_path):
    teacher = fit(tiny_config(out="teacher"), log=lambda *a: None).run_dir
    kd = [f"distill.teacher={teacher}", "distill.weight=0.5", "distill.tta=flip", "train.epochs=3"]
    full = fit(tiny_config(*kd, out="full"), log=lambda *a: None)
    assert (full.run_dir / CACHE_NAME).is_file()
    plain = fit(tiny_config("train.epochs=3", out="plain"), log=lambda *a: None)
    a = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    p = torch.load(plain.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert not torch.allclose(a["head.weight"], p["head.weight"])  # the teacher changed training

    # interrupted after epoch 1 and resumed: the cached targets are read, the result is the same
    cfg = tiny_config(*kd, out="cut")
    interrupt_after_epoch_1(cfg, monkeypatch)
    import dicc.distill as distill

    monkeypatch.setattr(distill, "teacher_log_probs", lambda *a, **k: pytest.fail("the cache was not used"))
    resumed = fit(cfg, resume=True, log=lambda *a: None)
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.final["confusion_matrix"] == full.final["confusion_matrix"]


def test_batch_teachers_score_the_batch_in_their_own_normalisation(tmp_path):
    data = build_run_data(load_config(None, ["data.longtail=[6,3,6,9,6,4,8]", "data.val=null"]).data)
    a = make_checkpoint(tmp_path / "a.pt", seed=0)
    b = make_checkpoint(tmp_path / "b.pt", seed=1, mean=0.4, std=0.3)
    pixels = torch.rand(5, 1, 48, 48, generator=torch.Generator().manual_seed(2))  # in 0..1
    mean_s, std_s = 0.45, 0.2  # the student's normalisation of the batch
    got = BatchTeachers([str(a), str(b)], data.train)((pixels - mean_s) / std_s, mean_s, std_s)
    want = 0
    for path, (mean, std) in ((a, (0.5, 0.25)), (b, (0.4, 0.3))):  # by hand: each its own way
        model, strategy = model_from_checkpoint(load_checkpoint(path))
        with torch.no_grad():
            want = want + strategy.parent_logits(model.eval()((pixels - mean) / std)).softmax(1) / 2
    assert torch.allclose(got.exp(), want, atol=1e-5)


def test_distilled_on_augmented_batches_takes_the_batch_targets(tmp_path):
    data = build_run_data(load_config(None, ["data.longtail=[6,3,6,9,6,4,8]", "data.val=null"]).data)
    teachers = BatchTeachers([str(make_checkpoint(tmp_path / "a.pt"))], data.train)
    ce = create_strategy("ce", COUNTS)
    d = Distilled(ce, None, temperature=2.0, weight=0.6, batch_teachers=teachers)
    x = torch.randn(4, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(1))
    y, idx = torch.tensor([0, 1, 2, 3]), torch.tensor([9, 8, 7, 6])
    with pytest.raises(RuntimeError, match="observe_inputs"):
        d.loss(logits, y, idx)
    d.observe_inputs(x, 0.5, 0.25)
    want = 0.6 * distillation_loss(logits, teachers(x, 0.5, 0.25), 2.0) + 0.4 * ce.loss(logits, y, idx)
    assert d.loss(logits, y, idx).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="not both"):
        Distilled(ce, torch.zeros(3, 7), 1.0, 0.5, batch_teachers=teachers)


def test_training_with_teachers_on_augmented_batches_resumes_exactly(tiny_config, monkeypatch, tmp_path):
    teacher = fit(tiny_config(out="teacher"), log=lambda *a: None).run_dir
    kd = [f"distill.teacher={teacher}", "distill.targets=augmented", "augment.mixup=0.2", "train.epochs=3"]
    full = fit(tiny_config(*kd, out="full"), log=lambda *a: None)
    assert not (full.run_dir / CACHE_NAME).exists()  # nothing cached: the teacher scores each batch
    cached = fit(tiny_config(*kd[:1], "train.epochs=3", "augment.mixup=0.2", out="cached"), log=lambda *a: None)
    a = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    c = torch.load(cached.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert not torch.allclose(a["head.weight"], c["head.weight"])  # other targets, other training
    cfg = tiny_config(*kd, out="cut")
    interrupt_after_epoch_1(cfg, monkeypatch)
    resumed = fit(cfg, resume=True, log=lambda *a: None)
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
