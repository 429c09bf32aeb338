"""Dataset loaders, offline first.

Every loader finds its files with `find_file`, which looks, in order, in ``--data-dir``,
the ``PENALTY_TF_DATA`` environment variable, Keras' cache (``~/.keras/datasets``) and
only then downloads (where the dataset has a download), and checks shapes and value
ranges of what it loads. Missing, truncated or malformed files raise `DataError` with a
message naming the file, where it looked, and where to get it.

One module per dataset family (so that experiments can grow their loaders side by side):
``mnist`` here; CIFAR10, SVHN, Omniglot, Mini-ImageNet and dog-fish in their own modules.
"""

from penalty_tf.datasets.lookup import DataError, find_file, search_dirs
from penalty_tf.datasets.mnist import load_mnist
from penalty_tf.datasets.split import Split

__all__ = ["DataError", "Split", "find_file", "load_mnist", "search_dirs"]
