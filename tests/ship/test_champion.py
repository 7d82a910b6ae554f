"""The champion rule of promotion, on its own: McNemar's exact test on constructed prediction
pairs with known p-values, which version holds ``champion`` afterwards, and what the user is
told."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ship.registry import decide_champion
from pipeline.ship.significance import compare


def _right(candidate_only: int, champion_only: int, both: int = 9_800, neither: int = 0):
    """Which images each model reads right: the candidate alone, the champion alone, both,
    neither, in that order."""
    candidate = [True] * candidate_only + [False] * champion_only + [True] * both
    champion = [False] * candidate_only + [True] * champion_only + [True] * both
    return (np.array(candidate + [False] * neither), np.array(champion + [False] * neither))


@pytest.mark.parametrize("candidate_only, champion_only, p_value", [
    (10, 2, 79 / 4096),  # P(X >= 10), X ~ Binomial(12, 1/2): (66 + 12 + 1) / 2^12
    (7, 3, 176 / 1024),  # (120 + 45 + 10 + 1) / 2^10: three images ahead is not enough
    (5, 5, 638 / 1024),  # level: (252 + 210 + 120 + 45 + 10 + 1) / 2^10
    (0, 4, 1.0),  # behind: no evidence the candidate is better
    (0, 0, 1.0),  # no image tells them apart
])
def test_mcnemars_exact_test_gives_the_known_p_value(candidate_only, champion_only, p_value):
    result = compare(*_right(candidate_only, champion_only, neither=30))
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert (result.candidate_only, result.champion_only) == (candidate_only, champion_only)
    assert (result.both, result.neither) == (9_800, 30)
    assert result.images == candidate_only + champion_only + 9_830


def test_models_compared_on_different_images_are_refused():
    with pytest.raises(ValueError, match="same images"):
        compare(np.ones(10, bool), np.ones(9, bool))


def test_the_first_promoted_version_becomes_the_champion_silently():
    decision = decide_champion("1", 0.98, None)
    assert (decision.move, decision.is_champion, decision.lines) == (True, True, ())


def test_a_candidate_better_at_the_level_takes_the_alias():
    decision = decide_champion("3", 0.9810, ("2", 0.9802), compare(*_right(10, 2)))
    assert (decision.move, decision.is_champion, decision.outcome) == (True, True, "better")
    assert decision.lines == (
        "current champion: version 2, test accuracy 98.02%; candidate: version 3, test "
        "accuracy 98.10%",
        "on the same 9,812 test images the candidate alone is right on 10, the champion alone "
        "on 2; McNemar's exact test (one-sided): p = 0.0193",
        "the candidate is better at p < 0.05")


def test_a_candidate_a_few_images_ahead_is_not_enough():
    """Four images more of 10,000 (+0.04 points) is seed noise: the champion stays."""
    decision = decide_champion("3", 0.9806, ("2", 0.9802), compare(*_right(7, 3)))
    assert (decision.move, decision.is_champion, decision.outcome) == (False, False, "kept")
    assert decision.lines[-1] == ("champion stays at version 2: the candidate is not shown "
                                  "better at p < 0.05 (--force to move it anyway)")


def test_the_level_is_the_users_choice():
    decision = decide_champion("3", 0.9806, ("2", 0.9802), compare(*_right(7, 3)), alpha=0.2)
    assert decision.move and decision.lines[-1] == "the candidate is better at p < 0.2"


@pytest.mark.parametrize("candidate_only, champion_only", [(7, 3), (0, 40)])
def test_force_moves_the_alias_and_says_it_was_forced(candidate_only, champion_only):
    decision = decide_champion("3", 0.97, ("2", 0.98),
                               compare(*_right(candidate_only, champion_only)), force=True)
    assert (decision.move, decision.is_champion, decision.outcome) == (True, True, "forced")
    assert decision.lines[-1] == ("moved by --force: the candidate is not shown better at "
                                  "p < 0.05")


def test_a_candidate_that_is_the_champion_already_moves_nothing():
    decision = decide_champion("4", 0.5, ("4", 0.5), force=True)
    assert (decision.move, decision.is_champion) == (False, True)
    assert decision.lines == ("version 4 is already the champion",)
