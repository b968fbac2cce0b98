"""Sample-quality metrics, each matching its reference definition (shared/docs/references.md).

- fid:       Fréchet distance between Gaussian fits of two feature sets (Heusel et al. 2017).
- kid:       kernel inception distance, unbiased MMD² with a cubic kernel (Bińkowski et al. 2018).
- prdc:      precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).
- msssim:    SSIM / MS-SSIM (Wang et al. 2003) and mean pairwise MS-SSIM diversity (Odena et al. 2017).
- inception: the FID Inception network (pool3, 2048-d) with TF1-style preprocessing, and the Inception Score.

Every metric takes torch tensors (CPU or CUDA) and returns python floats, dicts or tensors.
Import the submodule you need; this package imports nothing heavy.
"""
