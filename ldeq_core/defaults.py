"""Default values that several layers share, defined once here (the lowest layer) and referenced everywhere else.

The typed settings of :mod:`ldeq_shared.params` (and so ``params.yaml``'s documented defaults) use these.
"""

from __future__ import annotations

EXTRA_SCALE = 1.2  # crop side / face-box side (spec 5.4)
BOX_EXPAND = 1.1  # detector-like face box side / landmark box side (300-W stills, synthetic data, the detector)
RESET_IOU = 0.3  # an RwR stream whose face box jumps below this IoU to the previous box is reset (full solve)
BUDGET_NFE = 2  # RwR cell evaluations per warm frame (upstream: 2)
JPEG_QUALITY = 95  # JPEG quality of encoded crops and stills
