"""Loss-balancing methods: one file each, all re-exported here."""

from fairmtl.weighting.base import Weighting
from fairmtl.weighting.ls import LS

__all__ = ["LS", "Weighting"]
