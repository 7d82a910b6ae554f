"""The tiny search space the tests search, written once: a one-block network on a few thousand
MNIST images, its width and learning rate searched. Each test asks for the variant it needs."""

from __future__ import annotations

import textwrap


def tiny_space(*, epochs: int = 2, train_subset: int = 2000, lowest_lr: str = "1.0e-6",
               sampler_startup: int = 5, pruner_startup: int = 2) -> str:
    """The space as YAML text. Learning rates down to 1e-6 learn nothing in two epochs: the
    seeded random start draws some, and the pruner must stop them."""
    return textwrap.dedent(f"""\
        study:
          sampler: {{seed: 0, n_startup_trials: {sampler_startup}}}
          pruner: {{n_startup_trials: {pruner_startup}, n_warmup_steps: 0}}
        data: {{val_size: 500, train_subset: {train_subset}}}
        fixed: {{epochs: {epochs}, depth: 1, fc_width: 16, batch_size: 64}}
        params:
          width: {{type: categorical, choices: [4, 8]}}
          lr: {{type: float, low: {lowest_lr}, high: 3.0e-2, log: true}}
        """)
