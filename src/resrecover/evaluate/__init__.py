"""Evaluation against the ground truth (docs/design.md#evaluation).

Modules (imported explicitly, e.g. ``from resrecover.evaluate.metrics import image_metrics``):

- ``metrics``: MSE, PSNR and 3D SSIM (fast, streaming; agrees with scikit-image).
- ``msssim``: 3D multiscale-SSIM quality maps with MATLAB ``multissim3`` behaviour.
- ``resolution``: Gaussian-fit effective resolution and Fourier shell correlation.
- ``segmentation`` / ``pores``: the one segmentation recipe and the pore tables.
- ``stages``: the evaluation rules' entry points (``segment_ground_truth``, ``evaluate_volume``,
  ``collect_pore_tables``), files in, files out.
- ``summary``: the study's summary table; ``learning_curve``: scoring on the validation realization.
"""
