"""Your own scans (docs/own_scans.md): train on a registered low/high-resolution pair, recover the large FOV.

A microscopist has a low-resolution scan of a whole sample (the large field of view, LFOV) and a
high-resolution scan of an interior region. One module per step, in the order the workflow runs
them (rules in workflow/rules/pairs.smk):

================  ===============================================================================
module            what it does
================  ===============================================================================
``pairs``         the ``pairs:`` config block, checked and filled (and the synthetic ``example``)
``registration``  places the high-res scan in the low-res one: stage offset, then 3D FFT correlation
``training``      the overlap as a training pair (low-res resampled onto the high-res voxels); training
``recovery``      the whole low-res FOV (or an ROI) recovered on the high-res grid, out of core
``pore_flags``    is this pore real? the trust classifier fitted on the overlap, applied to every pore
``example``       the synthetic pair cut from a phantom with a known answer, and its scores
``grid``          what they share: frames, the high-res grids, the lazy upsampling, ROIs
================  ===============================================================================

Import from the module (``from resrecover.ownscan.recovery import recover_large_fov``): this
package imports none of them, so the workflow reads its ``pairs:`` block without loading torch.
"""
