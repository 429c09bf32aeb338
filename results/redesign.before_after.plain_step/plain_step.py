import sys, time, statistics, json, os
import numpy as np
from importance_learning import speed
from importance_learning.bilevel import Classifier
try:
    from penalty_tf.optimizers import tf1_adam
except ImportError:
    from penalty_tf.solvers import tf1_adam
model, (x, y, xv, yv) = speed._model_and_batches("mnist_cnn", 200)
clf = Classifier(model, jit_compile=False)
if hasattr(clf, "train_step"):
    tr = clf.train_step(tf1_adam(1e-4)); call = lambda: float(tr((x, y)))
else:
    tr = clf.make_train_step(tf1_adam(1e-4)); call = lambda: float(tr(x, y))
call(); call()
ts = []
for _ in range(30):
    t = time.process_time(); call(); ts.append(time.process_time() - t)
print(json.dumps({"tree": os.getcwd(), "median": statistics.median(ts)}))
