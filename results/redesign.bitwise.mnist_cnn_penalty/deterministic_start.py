import sys, runpy
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
mod = sys.argv[1]; sys.argv = [mod] + sys.argv[2:]
runpy.run_module(mod, run_name="__main__")
