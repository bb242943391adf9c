"""AUROC against hand-computed values."""

from curate.metrics import auroc


def test_auroc_hand_computed() -> None:
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    # pairs (pos, neg): (2,1) win, (2,3) loss, (4,1) win, (4,3) win -> 3/4
    assert auroc([2, 4], [1, 3]) == 0.75
    # a tie counts half: (1,1) half, (1,0) win -> 1.5/2
    assert auroc([1], [1, 0]) == 0.75
