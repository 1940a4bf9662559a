"""Gradient-balancing methods: one file each, all re-exported here."""

from fairmtl.aggregators.base import Aggregator, GramianWeighting, check_jacobian
from fairmtl.aggregators.fairgrad import FairGrad
from fairmtl.aggregators.mean import Mean
from fairmtl.aggregators.mgda import MGDA
from fairmtl.aggregators.nash_mtl import NashMTL
from fairmtl.aggregators.sum import Sum

__all__ = [
    "MGDA",
    "Aggregator",
    "FairGrad",
    "GramianWeighting",
    "Mean",
    "NashMTL",
    "Sum",
    "check_jacobian",
]
