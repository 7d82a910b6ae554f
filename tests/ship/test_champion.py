"""The champion rule of promotion, on its own: which version holds ``champion`` afterwards, and
what the user is told."""

from __future__ import annotations

import pytest

from pipeline.ship.registry import decide_champion


def test_the_first_promoted_version_becomes_the_champion_silently():
    decision = decide_champion("1", 0.98, None)
    assert (decision.move, decision.is_champion, decision.lines) == (True, True, ())


@pytest.mark.parametrize("accuracy, force, moves", [
    (0.991, False, True),  # better on the test set
    (0.990, False, True),  # as good: the newer model takes it
    (0.989, False, False),  # worse: the champion stays
    (0.989, True, True),  # worse, but forced
])
def test_a_candidate_takes_the_alias_unless_the_champion_is_better(accuracy, force, moves):
    decision = decide_champion("3", accuracy, ("2", 0.990), force=force)
    assert decision.move is moves and decision.is_champion is moves
    assert decision.lines[0] == ("current champion: version 2, test accuracy 99.00%; candidate: "
                                 f"version 3, test accuracy {accuracy:.2%}")
    if not moves:
        assert decision.lines[1] == ("champion stays at version 2: the candidate is worse on "
                                     "the test set (--force to move it anyway)")


def test_a_candidate_that_is_the_champion_already_moves_nothing():
    decision = decide_champion("4", 0.5, ("4", 0.5), force=True)
    assert (decision.move, decision.is_champion) == (False, True)
    assert decision.lines == ("version 4 is already the champion",)
