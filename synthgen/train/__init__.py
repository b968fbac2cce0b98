"""Training: one loop (loop.py) and one `step` per method, chosen by name."""

from synthgen.train.bigan import BiGAN
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.cyclegan import CycleGAN
from synthgen.train.infogan import InfoGAN
from synthgen.train.pix2pix import Pix2Pix
from synthgen.train.progan import ProGAN
from synthgen.train.pyramid import LAPGAN, StackGAN
from synthgen.train.sgan import SemiSupervisedGAN
from synthgen.train.stargan import StarGAN
from synthgen.train.text2image import Text2Image
from synthgen.train.vaegan import VAEGAN

METHODS = {  # one line per method
    "cgan": ConditionalGAN,
    "pix2pix": Pix2Pix,
    "cyclegan": CycleGAN,
    "sgan": SemiSupervisedGAN,
    "infogan": InfoGAN,
    "bigan": BiGAN,
    "vaegan": VAEGAN,
    "text2image": Text2Image,
    "lapgan": LAPGAN,
    "stackgan": StackGAN,
    "progan": ProGAN,
    "stargan": StarGAN,
}
