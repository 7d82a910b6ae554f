"""Is the candidate better than the champion, or only luckier? McNemar's exact test.

Two networks of one design differ by about ±0.05 points on MNIST's 10,000 test images from the
seed alone, so a candidate a few images ahead of the champion is usually not better. Both read
the same test images; only the images exactly one of them reads right say anything about which
is better. Under "neither is better", each such image is equally likely to favour either, so the
number the candidate alone reads right is Binomial(those images, 1/2). The test is one-sided
(the question is whether the candidate is better) and exact (scipy's binomial test), which is
right for the few dozen discordant images two good networks have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """How a candidate and the champion read the same test images."""

    candidate_only: int  # images the candidate reads right and the champion wrong
    champion_only: int  # images the champion reads right and the candidate wrong
    both: int
    neither: int
    p_value: float  # one-sided: the chance of a lead this large if neither were better

    @property
    def images(self) -> int:
        return self.candidate_only + self.champion_only + self.both + self.neither

    def better_at(self, alpha: float) -> bool:
        return self.p_value < alpha

    def describe(self) -> str:
        return (f"on the same {self.images:,} test images the candidate alone is right on "
                f"{self.candidate_only}, the champion alone on {self.champion_only}; "
                f"McNemar's exact test (one-sided): p = {self.p_value:.3g}")


def compare(candidate_right: np.ndarray, champion_right: np.ndarray) -> PairedComparison:
    """McNemar's exact test of "the candidate is better" from which images each reads right."""
    from scipy.stats import binomtest

    candidate_right = np.asarray(candidate_right, dtype=bool)
    champion_right = np.asarray(champion_right, dtype=bool)
    if candidate_right.shape != champion_right.shape:
        raise ValueError("the two models must be compared on the same images")
    candidate_only = int((candidate_right & ~champion_right).sum())
    champion_only = int((champion_right & ~candidate_right).sum())
    discordant = candidate_only + champion_only
    # No image tells them apart: no evidence either way.
    p_value = (1.0 if discordant == 0 else
               float(binomtest(candidate_only, discordant, 0.5, alternative="greater").pvalue))
    return PairedComparison(candidate_only=candidate_only, champion_only=champion_only,
                            both=int((candidate_right & champion_right).sum()),
                            neither=int((~candidate_right & ~champion_right).sum()),
                            p_value=p_value)
