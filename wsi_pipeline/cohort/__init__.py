"""The cohort table: patients, slides, labels, outcomes; checks on load."""

from wsi_pipeline.cohort.table import Cohort, SlideRecord, load_cohort

__all__ = ["Cohort", "SlideRecord", "load_cohort"]
