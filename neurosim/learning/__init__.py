"""Learning: STDP rules, surrogate gradients, the online learner, readouts, Fisher
estimation, and the consolidation layer (one protocol: EWC, online-Fisher EWC, SI,
experience replay, Fisher-weighted merging, gamma-gated Fisher, drift detection, sleep)."""

from neurosim.learning.consolidation import (
    Consolidation,
    Consolidator,
    ConsolidatorBase,
    LearnerFeed,
    LearningStep,
    StepOutcome,
    TaskData,
    TrainingSignals,
    apply_proposed_weights,
    train_step,
)
from neurosim.learning.drift import PageHinkley, PageHinkleyConfig
from neurosim.learning.ewc import EWC, OnlineFisherEWC, OnlineFisherFeed
from neurosim.learning.learner import NoGradientSource, STDPOnlineLearner
from neurosim.learning.merge import FisherMerge, fisher_weighted_merge
from neurosim.learning.neuromodulation import GammaGatedFisherEWC, Neuromodulator
from neurosim.learning.readout import LinearReadout, VotingReadout
from neurosim.learning.replay import ExperienceReplay, ReservoirBuffer
from neurosim.learning.si import SI
from neurosim.learning.stdp import (
    PairSTDP,
    RewardSTDP,
    TraceMode,
    TripletSTDP,
    WeightDependence,
)
from neurosim.learning.surrogate import Surrogate, SurrogateKind

__all__ = [
    "EWC",
    "SI",
    "Consolidation",
    "Consolidator",
    "ConsolidatorBase",
    "ExperienceReplay",
    "FisherMerge",
    "GammaGatedFisherEWC",
    "LearnerFeed",
    "LearningStep",
    "LinearReadout",
    "Neuromodulator",
    "NoGradientSource",
    "OnlineFisherEWC",
    "OnlineFisherFeed",
    "PageHinkley",
    "PageHinkleyConfig",
    "PairSTDP",
    "ReservoirBuffer",
    "RewardSTDP",
    "STDPOnlineLearner",
    "StepOutcome",
    "Surrogate",
    "SurrogateKind",
    "TaskData",
    "TraceMode",
    "TrainingSignals",
    "TripletSTDP",
    "VotingReadout",
    "WeightDependence",
    "apply_proposed_weights",
    "fisher_weighted_merge",
    "train_step",
]
