"""MNIST: its four official files found or fetched and verified (sources), read as tensors and
split into training and validation images (splits), augmented on the training device (augment)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "sources": ["SOURCES", "ensure_mnist", "default_data_dir"],
    "splits": ["DataSplits", "Mnist", "Split", "load_mnist", "split_train_val"],
    "augment": ["random_affine"],
})
