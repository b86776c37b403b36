"""Evaluation against the ground truth (docs/design.md#evaluation).

Modules (imported explicitly, e.g. ``from resrecover.evaluate.metrics import image_metrics``):

- ``metrics``: MSE, PSNR and 3D SSIM (fast, streaming; agrees with scikit-image).
- ``msssim``: 3D multiscale-SSIM quality maps with MATLAB ``multissim3`` behaviour.
- ``resolution``: Gaussian-fit effective resolution and Fourier shell correlation.
- ``segmentation`` / ``pores``: the one segmentation recipe and the pore tables.
"""
