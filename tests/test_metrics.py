"""Confusion matrix and scores against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch

from geminifusion.engine.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    format_class_table,
    format_report,
    format_summary_table,
    scores_from_confusion,
    to_json_ready,
)

# Three classes. Labels hold the ignore value 255 and an out-of-range 7 (NYUDv2's ">= K"),
# which must not count; class 2 is predicted once but never present.
LABEL = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 7], [0, 1, 0, 0]])
PRED = torch.tensor([[0, 0, 1, 1], [1, 2, 0, 0], [0, 1, 1, 0]])
# rows: true class, columns: predicted class, counted pixel by pixel from the arrays above.
EXPECTED = torch.tensor([[4, 2, 0], [0, 3, 1], [0, 0, 0]])


def test_confusion_matrix_by_hand():
    assert torch.equal(confusion_matrix(PRED, LABEL, 3), EXPECTED)


def test_scores_by_hand():
    s = scores_from_confusion(EXPECTED)
    # 7 of 10 counted pixels right; class accuracy 4/6 and 3/4; class 2 absent -> NaN, skipped.
    assert s["pixels"] == 10
    assert s["aAcc"] == pytest.approx(70.0)
    assert s["Acc"][:2] == pytest.approx([400 / 6, 75.0])
    assert math.isnan(s["Acc"][2])
    assert s["mAcc"] == pytest.approx((400 / 6 + 75.0) / 2)
    # IoU: class 0 = 4 / (6 + 4 - 4), class 1 = 3 / (4 + 5 - 3), class 2 = 0 / (0 + 1 - 0).
    assert s["IoU"] == pytest.approx([400 / 6, 50.0, 0.0])
    assert s["mIoU"] == pytest.approx((400 / 6 + 50.0 + 0.0) / 3)


def test_class_neither_present_nor_predicted_is_skipped():
    m = torch.tensor([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
    s = scores_from_confusion(m)
    assert math.isnan(s["IoU"][2]) and math.isnan(s["Acc"][2])
    # class 0: 3 / (4 + 4 - 3), class 1: 5 / (6 + 6 - 5)
    assert s["mIoU"] == pytest.approx((60.0 + 500 / 7) / 2)


def test_empty_matrix_scores_zero():
    s = scores_from_confusion(torch.zeros(4, 4, dtype=torch.int64))
    assert (s["aAcc"], s["mAcc"], s["mIoU"], s["pixels"]) == (0.0, 0.0, 0.0, 0)


def test_accumulation_equals_one_shot_and_checks_inputs():
    acc = ConfusionMatrix(3)
    acc.update(PRED[:2], LABEL[:2])
    acc.update(PRED[2:], LABEL[2:])
    acc.all_reduce()  # no process group: nothing to sum
    assert torch.equal(acc.matrix, EXPECTED)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(PRED, LABEL[:2], 3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion_matrix(PRED + 1, LABEL, 3)
    with pytest.raises(ValueError, match="positive"):
        ConfusionMatrix(0)


def test_random_against_plain_loop():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 7, (2, 9, 11), generator=g)
    label[label == 6] = 255
    pred = torch.randint(0, 5, (2, 9, 11), generator=g)
    plain = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(label.flatten().tolist(), pred.flatten().tolist(), strict=True):
        if t < 5:
            plain[t, p] += 1
    assert torch.equal(confusion_matrix(pred, label, 5), plain)


def test_tables_in_mmseg_layout():
    s = scores_from_confusion(EXPECTED)
    table = format_class_table(s, ["wall", "floor", "chair"])
    lines = table.splitlines()
    assert lines[0].startswith("+-") and lines[0] == lines[2] == lines[-1]
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["Class", "IoU", "Acc"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["wall", "66.67", "66.67"]
    assert [c.strip() for c in lines[5].strip("|").split("|")] == ["chair", "0.00", "nan"]
    summary = format_summary_table({"ensemble": s}).splitlines()
    assert [c.strip() for c in summary[1].strip("|").split("|")] == ["aAcc", "mIoU", "mAcc"]
    assert [c.strip() for c in summary[3].strip("|").split("|")] == ["70.00", "38.89", "70.83"]
    several = format_summary_table({"rgb": s, "depth": s, "ensemble": s}).splitlines()
    assert [c.strip() for c in several[1].strip("|").split("|")] == [
        "Output", "aAcc", "mIoU", "mAcc"
    ]  # fmt: skip
    report = format_report({"rgb": s, "ensemble": s}, ["a", "b", "c"])
    assert report.startswith("per-class results (ensemble):")
    with pytest.raises(ValueError, match="2 class names for 3"):
        format_class_table(s, ["a", "b"])


def test_json_ready_has_no_nan():
    s = scores_from_confusion(EXPECTED)
    text = json.dumps(to_json_ready({"ensemble": s}), allow_nan=False)
    assert json.loads(text)["ensemble"]["Acc"][2] is None
