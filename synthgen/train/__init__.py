"""Training: one loop (loop.py) and one `step` per method, chosen by name."""

from synthgen.train.cgan import ConditionalGAN

METHODS = {"cgan": ConditionalGAN}
