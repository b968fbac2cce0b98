"""synthgen: train conditional GANs on your own image folders and sample class-balanced datasets."""

__version__ = "0.1.0"
