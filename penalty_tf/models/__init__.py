"""The Keras models of the paper's experiments, returning logits (softmax only in the loss).

One module per experiment family: ``classifiers`` (importance learning: MNIST softmax
regression and CNN, CIFAR10 and SVHN CNNs), ``few_shot`` (the Omniglot and Mini-ImageNet
encoders and the scaled-cosine classifier). The poisoning experiments' linear classifiers
are plain variables in their scripts.
"""
