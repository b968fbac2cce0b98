"""Training: one loop (loop.py) and one `step` per method, chosen by name."""

from synthgen.train.bigan import BiGAN
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.cyclegan import CycleGAN
from synthgen.train.infogan import InfoGAN
from synthgen.train.pix2pix import Pix2Pix
from synthgen.train.sgan import SemiSupervisedGAN
from synthgen.train.stargan import StarGAN
from synthgen.train.vaegan import VAEGAN

METHODS = {
    "cgan": ConditionalGAN, "pix2pix": Pix2Pix, "cyclegan": CycleGAN,
    "sgan": SemiSupervisedGAN, "infogan": InfoGAN, "bigan": BiGAN, "vaegan": VAEGAN,
    "stargan": StarGAN,
}
