"""The IL networks (Sec. 3.1): the student's simplicial embedding, its temperature, the classifiers on C' channels."""

from __future__ import annotations


import pytest
import torch

from ltaug.method.checkpoint import load_il_model
from ltaug.method.networks import LatentClassifier, Student, densenet121_classifier


def test_student_channel_probabilities_sum_to_one_everywhere():
    torch.manual_seed(0)
    student = Student(4, 16, width=8, depth=2)
    zs = student(3 * torch.randn(5, 4, 8, 12))
    assert zs.shape == (5, 16, 8, 12)
    assert (zs >= 0).all()
    torch.testing.assert_close(zs.sum(dim=1), torch.ones(5, 8, 12), atol=1e-6, rtol=0)
    # and it is the softmax of the logits over channels, at every position
    logits = student.logits(torch.ones(1, 4, 8, 12))
    torch.testing.assert_close(student(torch.ones(1, 4, 8, 12)), logits.exp() / logits.exp().sum(1, keepdim=True))


def test_student_temperature_sharpens():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8, 8)
    cold = Student(4, 16, 8, 1, temperature=0.1)
    warm = Student(4, 16, 8, 1, temperature=1.0)
    warm.load_state_dict(cold.state_dict())
    assert cold(z).max(dim=1).values.mean() > warm(z).max(dim=1).values.mean()


def test_student_rejects_latents_not_divisible_by_its_depth():
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth = 4"):
        Student(4, 8, 8, depth=2)(torch.zeros(1, 4, 6, 8))


def test_densenet121_takes_c_prime_channels():
    torch.manual_seed(0)
    model = densenet121_classifier(16, 5, stem="small").eval()
    assert model.features.conv0.in_channels == 16
    assert model(torch.rand(2, 16, 16, 16)).shape == (2, 5)
    big = densenet121_classifier(16, 5, stem="imagenet").eval()
    assert big(torch.rand(1, 16, 32, 32)).shape == (1, 5)


def test_latent_classifier_is_c_of_s(trained):
    model = load_il_model(trained[0] / "model.pt").model
    z = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(LatentClassifier(model.student, model.classifier)(z), model(z)[2])
