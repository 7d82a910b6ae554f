"""What a complete trial's run shows about its mistakes: the confusion matrix and its picture."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from pipeline.train.diagnostics import confusion_image, diagnose


def test_the_confusion_matrix_counts_as_scikit_learn_does():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (3000,), generator=generator)
    predictions = torch.where(torch.rand(3000, generator=generator) < 0.9, labels,
                              torch.randint(0, 10, (3000,), generator=generator))
    diag = diagnose(labels, predictions)
    assert np.array_equal(diag.matrix, confusion_matrix(labels.numpy(), predictions.numpy(),
                                                        labels=list(range(10))))
    for digit, accuracy in diag.per_class_accuracy.items():
        row = diag.matrix[digit]
        assert accuracy == row[digit] / row.sum()


def test_a_digit_absent_from_the_labels_has_no_accuracy_rather_than_a_crash():
    diag = diagnose(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2]))
    assert np.isnan(diag.per_class_accuracy[7]) and diag.per_class_accuracy[1] == 0.5


def test_the_picture_marks_right_answers_blue_and_mistakes_red():
    labels = torch.tensor([3] * 50 + [5] * 50)
    predictions = torch.tensor([3] * 50 + [5] * 40 + [3] * 10)  # ten 5s read as 3
    cell, left, top = 44, 56, 52  # confusion_image's layout
    image = confusion_image(diagnose(labels, predictions), "t", cell=cell)

    def colour(true: int, predicted: int) -> tuple[int, int, int]:
        return image.getpixel((left + predicted * cell + 3, top + true * cell + 3))

    right, mistake, empty = colour(3, 3), colour(5, 3), colour(0, 9)
    assert right[2] > right[0] + 90  # deep blue (8, 48, 107)
    assert mistake[0] > mistake[2] + 90  # red
    assert empty == (255, 255, 255)
